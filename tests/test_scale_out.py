"""Scale-out engines give exactly the single-process results: worker processes and a local Ray instance
for the bottleneck phase, Ray Data for `classify`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

pytest.importorskip("ray")

from runtime.cli import app  # noqa: E402
from runtime.distributed import Engine  # noqa: E402

from conftest import COLOR_LABELS  # noqa: E402

pytestmark = pytest.mark.slow

RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


def test_worker_processes_and_ray_compute_exactly_the_local_features(assets_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from train.backbones import get_backbone
    from train.bottleneck import compute_bottlenecks
    from train.cache import BottleneckCache
    from train.engines import EngineConfig, WorkerSpec
    from train.extractor import EXTRACTOR_FILE, onnx_extractor
    from train.views import symmetry_views

    paths = sorted(assets_dir.glob("*/*.jpg"))[::16]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really")
    paths.append(broken)
    backbone = get_backbone("mobilenet_v2", "none", (48, 48), seed=0)
    extractor = backbone.build_extractor()
    results = {}
    for name, engine in {
        "this process": EngineConfig(),
        "2 processes": EngineConfig(workers=2),
        "local Ray, 2 actors": EngineConfig(engine=Engine.ray, workers=2),
    }.items():
        cache = BottleneckCache(tmp_path / name, backbone)
        extract = onnx_extractor(extractor, cache.directory)
        for views in (2, 4):  # half the images with 2 views first: then two groups, 2 views missing or all 4
            spec = WorkerSpec(cache.directory / EXTRACTOR_FILE, (48, 48), tuple(symmetry_views(views, (48, 48))))
            chosen = paths[::2] if views == 2 else paths
            results[name] = compute_bottlenecks(chosen, spec, cache, extract, batch_size=16, console=Console(file=io.StringIO()), engine=engine)
    reference = results.pop("this process")
    assert reference.views_computed == 2 * len(paths[:-1:2]) + 4 * len(paths[1:-1:2])
    assert reference.computed == len(paths) - 1 and [failure.source for failure in reference.failures] == [str(broken)]
    for name, result in results.items():
        assert result.computed == reference.computed and [f.problem for f in result.failures] == [f.problem for f in reference.failures], name
        for path in paths[:-1]:
            assert np.array_equal(result.features[path], reference.features[path]), (name, path)


def test_train_model_engine_ray_gives_the_local_model(small_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    reports = {}
    for engine in ("local", "ray"):
        command = [
            sys.executable, "-m", "train", str(small_dataset), "--export", str(tmp_path / f"{engine}.onnx"),
            "--workspace", str(tmp_path / engine), "--weights", "none", "--image-size", "64", "--split", "50,25,25",
            "--engine", engine, "--workers", "2",
        ]
        done = subprocess.run(command, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[engine] = json.loads((tmp_path / f"{engine}.report.json").read_text())
    assert reports["ray"]["bottlenecks"]["computed"] == 40
    assert reports["ray"]["test"]["predictions"] == reports["local"]["test"]["predictions"]


def test_classify_engine_ray_gives_the_local_results_in_input_order(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for index in range(60):
        label = COLOR_LABELS[index % 3]
        Image.new("RGB", (8 + index, 8), RGB[label]).save(folder / f"{index:03d}.png")
    (folder / "030.png").write_bytes(b"")  # one bad file, in the middle
    listed = tmp_path / "files.txt"
    listed.write_text("".join(f"{path}\n" for path in sorted(folder.iterdir(), reverse=True)), encoding="utf-8-sig")  # with a BOM, as Notepad saves
    runner = CliRunner()
    outputs = {}
    for name, arguments in {
        "local folder": [str(folder)],
        "ray folder": [str(folder), "--engine", "ray", "--workers", "2", "--batch-size", "7"],
        "local list": ["--list", str(listed)],
        "ray list": ["--list", str(listed), "--engine", "ray", "--workers", "2", "--batch-size", "5"],
        "ray list on standard input": ["--list", "-", "--engine", "ray", "--workers", "2", "--batch-size", "5"],
    }.items():
        table = tmp_path / f"{name}.csv"
        done = runner.invoke(app, [str(color_model), *arguments, "--csv", str(table)], input=listed.read_bytes())
        assert done.exit_code == 1, done.stderr
        assert "error: " in done.stderr and "030.png: empty (0 bytes)" in done.stderr
        outputs[name] = (done.stdout, table.read_text(encoding="utf-8"))
    assert outputs["ray folder"] == outputs["local folder"]
    assert outputs["ray list"] == outputs["ray list on standard input"] == outputs["local list"]
    rows = outputs["ray list"][1].splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == listed.read_text(encoding="utf-8-sig").split()  # input order kept


def test_a_ray_worker_reads_relative_names_from_the_drivers_directory_and_reports_them_as_given(
    color_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor class, given the arguments the driver makes in its own working directory, then run in another
    one (as on a cluster started elsewhere: Ray starts workers where the cluster was started)."""
    from runtime import Classifier
    from runtime.ray_classify import FILE_COLUMN, TEXT_COLUMN, BatchClassifier, actor_arguments

    driver = tmp_path / "driver"
    (driver / "photos").mkdir(parents=True)
    Image.new("RGB", (8, 8), RGB["red"]).save(driver / "photos" / "red.png")
    (driver / "photos" / "bad.png").write_bytes(b"")
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(driver)
    arguments = {column: actor_arguments(color_model, "cpu", column) for column in (FILE_COLUMN, TEXT_COLUMN)}
    monkeypatch.chdir(tmp_path / "worker")
    local = Classifier(color_model, providers="cpu")
    red = [local.predict(driver / "photos" / "red.png").probabilities[label] for label in local.labels]
    names = ["photos/red.png", str(driver / "photos" / "red.png"), "photos/bad.png"]
    listed = [" ./photos/red.png ", str(driver / "photos" / "red.png"), "photos//bad.png"]  # lines as a --list file has them
    for column, given, reported in ((FILE_COLUMN, names, names), (TEXT_COLUMN, listed, names)):
        out = BatchClassifier(**arguments[column])({column: np.array(given, dtype=object)})
        assert out[FILE_COLUMN].tolist() == reported  # as the local engine names them
        assert np.allclose(out["probabilities"][0], red) and np.allclose(out["probabilities"][1], red)
        assert out["error"][:2].tolist() == ["", ""] and "empty (0 bytes)" in out["error"][2]


def test_a_ray_address_where_nothing_answers_fails_at_once_in_one_line(color_model: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), RGB["red"]).save(image)
    for address, host in ((f"127.0.0.1:{port}", "127.0.0.1"), (f"ray://127.0.0.1:{port}", "127.0.0.1"), (f"[::1]:{port}", "::1")):
        done = CliRunner().invoke(app, [str(color_model), str(image), "--engine", "ray", "--ray-address", address])
        assert done.exit_code == 2
        assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot connect to the Ray cluster at '{address}' (nothing answers at {host}:{port}")
