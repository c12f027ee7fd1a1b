"""Edge variants against the fp32 model: test accuracy, agreement, throughput at batch 32 and file size.

Each data set gets a default `train-model` run with `--quantize int8 --half --force` (forced so a variant
the accuracy gate would refuse is still measured; the gate's verdict is kept in `forced`) per split seed:
a test split of `assets/` holds about 65 images, so one flipped prediction moves accuracy by 1.5 points and
one seed alone cannot tell a variant's cost from luck. Seeds are added until the test images pooled over
them reach `EdgeTraining.min_test_images`, so a small data set gets more seeds than a large one. Throughput goes through the runtime's
`Classifier.predict_pixels` (same code path and memory bound for all variants), the precisions timed in
turn, batch after batch, so the machine's drift does not land on one of them.
"""

from __future__ import annotations

import io
import itertools
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
from rich.console import Console

from benchmarks.timing import batch_of, interleaved_throughput
from runtime import Classifier
from runtime.imaging import load_for_model
from train.edge import EdgeConfig
from train.model_files import variant_path
from train.pipeline import TrainConfig, run

BATCH = 32
#: Timed batches of 32 per precision, taken in turn (fp32 at 224 px and 8 views: about 3 s each here).
ROUNDS = 7


@dataclass(frozen=True)
class EdgeTraining:
    """The models the variants are made from: one per split seed, with these views and input size (None:
    the backbone's). The defaults are `train-model`'s."""

    seeds: Sequence[int] = (0,)
    #: Further seeds (after the last of `seeds`, one by one) are measured until the test images of all the
    #: seeds measured add up to at least this many.
    min_test_images: int = 0
    views: int = TrainConfig.views
    image_size: int | None = None


def measure_edge(
    name: str, data_dir: Path, workspace: Path, out_dir: Path, training: EdgeTraining = EdgeTraining()
) -> list[dict[str, object]]:
    """One row per split seed and precision (fp32, int8, fp16) for the model `training` trains on `data_dir`."""
    rows: list[dict[str, object]] = []
    further = itertools.count(max(training.seeds, default=-1) + 1)
    for seed in itertools.chain(training.seeds, further):
        if seed not in training.seeds and sum(row["test_images"] for row in rows if row["precision"] == "fp32") >= training.min_test_images:
            break
        rows += _measure_seed(name, data_dir, workspace, out_dir, training, seed)
    return rows


def _measure_seed(
    name: str, data_dir: Path, workspace: Path, out_dir: Path, training: EdgeTraining, seed: int
) -> list[dict[str, object]]:
    model_path = out_dir / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-')}-seed{seed}.onnx"  # names hold "/" and spaces
    size = None if training.image_size is None else (training.image_size, training.image_size)
    config = TrainConfig(
        data_dir=data_dir, export=model_path, workspace=workspace, seed=seed, views=training.views, image_size=size,
        edge=EdgeConfig(int8=True, fp16=True, force=True),
    )
    report = run(config, Console(file=io.StringIO())).report
    classifiers = {"fp32": Classifier(model_path, providers="cpu")}
    classifiers |= {v["precision"]: Classifier(variant_path(model_path, v["precision"]), providers="cpu") for v in report["edge_variants"]}
    fp32 = classifiers["fp32"]
    test_files = [row["file"] for row in report["test"]["predictions"]][:BATCH]
    pixels = batch_of(np.stack([load_for_model(data_dir / file, fp32.input_size) for file in test_files]), BATCH)
    speeds = interleaved_throughput({name: partial(c.predict_pixels, pixels) for name, c in classifiers.items()}, BATCH, ROUNDS)
    rows = [{
        "data": name, "seed": seed, "precision": "fp32", "views": fp32.metadata.views, "bytes": model_path.stat().st_size, "size_vs_fp32": 1.0,
        "test_images": report["test"]["images"], "accuracy": report["test"]["accuracy"],
        "balanced_accuracy": report["test"]["balanced_accuracy"], "agreement": 1.0,
        "loss_points": 0.0, "images_per_s_batch32": speeds["fp32"], "speed_vs_fp32": 1.0, "gate_passed": True,
    }]
    for variant in report["edge_variants"]:
        precision = variant["precision"]
        rows.append({
            "data": name, "seed": seed, "precision": precision, "views": fp32.metadata.views, "bytes": variant["bytes"],
            "test_images": report["test"]["images"],
            "size_vs_fp32": variant["size_vs_fp32"], "accuracy": variant["variant"]["accuracy"],
            "balanced_accuracy": variant["variant"]["balanced_accuracy"], "agreement": variant["agreement"],
            "loss_points": variant["loss_points"], "images_per_s_batch32": speeds[precision],
            "speed_vs_fp32": speeds[precision] / speeds["fp32"],
            "gate_passed": not variant["forced"], "float32_nodes": len(variant.get("float32_nodes", [])),
            "head_distilled": variant.get("head", {}).get("distilled"),
        })
    return rows
