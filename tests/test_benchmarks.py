"""The benchmark code itself, run end to end with a tiny model and tiny timings (no timing assertions)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("matplotlib")

from benchmarks.edge import EdgeTraining  # noqa: E402
from benchmarks.flops import model_flops_per_image  # noqa: E402
from benchmarks.models import BackboneChoice  # noqa: E402
from benchmarks.report import PLOT_FILE, write_results  # noqa: E402
from benchmarks.suite import SuiteConfig, run_suite  # noqa: E402
from train.data import load_dataset  # noqa: E402

pytestmark = pytest.mark.slow

TINY = SuiteConfig(
    backbones=[BackboneChoice("mobilenet_v2", "none", 32)], batch_sizes=(1, 32), latency_runs=50, min_seconds=0.01,
    bottleneck_images=6, startup_repeats=1, matmul_size=64, heavy_backbones=("mobilenet_v2",), default_views=2,
    edge_training=EdgeTraining(seeds=(0, 1), views=1, image_size=64),  # a small model: the variants' code, not their figures
)


def test_tiny_benchmark_run_writes_every_section_and_computed_targets(small_dataset: Path, tmp_path: Path) -> None:
    # One seed given, and a pool of test images one more than its test split holds: the run adds seed 1.
    seed_zero_tests = len(load_dataset(small_dataset, seed=0).split("test"))
    edge_training = dataclasses.replace(TINY.edge_training, seeds=(0,), min_test_images=seed_zero_tests + 1)
    tiny = dataclasses.replace(TINY, train_data_dir=small_dataset, edge_datasets=(("small", small_dataset),), edge_training=edge_training)
    result = run_suite(tiny, log=lambda line: None)
    paths = write_results(result, tmp_path / "results")
    assert [path.name for path in paths] == ["results.json", "results.md", PLOT_FILE]
    assert paths[2].read_bytes().startswith(b"\x89PNG")
    saved = json.loads(paths[0].read_text())

    engines = {(row["engine"], row["batch"]) for row in saved["inference"]}
    assert engines == {(engine, batch) for engine in ("onnxruntime", "tensorflow") for batch in (1, 32)}
    batch_one = [row for row in saved["inference"] if row["batch"] == 1]
    assert all(row["runs"] == 50 and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] for row in batch_one)
    assert all(row["environment"]["cores"] >= 1 and row["environment"]["cpu"] for row in saved["inference"])
    assert saved["bottleneck"]["cold_computed"] == 6 and saved["bottleneck"]["warm_computed"] == 0
    assert saved["training_rerun"]["warm_computed"] == 0
    assert [row["views"] for row in saved["classify_folder"]] == [1, 2]
    assert saved["cold_start"]["classify_one_image"]["seconds"] > 0 and saved["cold_start"]["import_runtime_seconds"] > 0
    assert any(row["default"] for row in saved["session_settings"])

    assert [(row["seed"], row["precision"]) for row in saved["edge"]] == [(seed, p) for seed in (0, 1) for p in ("fp32", "int8", "fp16")]
    assert saved["edge"][0]["test_images"] == seed_zero_tests
    assert all(0 < row["size_vs_fp32"] <= 1 and row["images_per_s_batch32"] > 0 for row in saved["edge"])
    loss = next(target for target in saved["targets"] if "int8 test accuracy loss" in target["name"])
    assert loss["name"].endswith("mean over split seeds 0, 1")
    assert loss["measured"] == pytest.approx(sum(row["loss_points"] for row in saved["edge"] if row["precision"] == "int8") / 2, abs=1e-4)

    assert len(saved["targets"]) == 10  # 2 speed-ups, 2 bottleneck, 1 peak share, 2 start-up, 3 int8
    compare = {">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
    for target in saved["targets"]:
        assert set(target) == {"name", "measured", "goal", "comparison", "met"}
        assert target["met"] == compare[target["comparison"]](float(target["measured"]), float(target["goal"]))
    markdown = paths[1].read_text()
    assert "## Targets" in markdown and "mobilenet_v2" in markdown and PLOT_FILE in markdown


def test_flops_of_mobilenet_v2_match_the_published_figure(tmp_path: Path, assets_dir: Path) -> None:
    from benchmarks.models import build

    model = build(BackboneChoice("mobilenet_v2", "none"), tmp_path, sorted((assets_dir / "CD").glob("*.jpg"))[:4])
    # MobileNetV2 at 224x224: about 300 million multiply-adds (Sandler et al. 2018), i.e. about 0.6 GFLOP.
    assert model_flops_per_image(model.onnx_path) == pytest.approx(0.6e9, rel=0.05)
