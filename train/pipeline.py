"""One training run, start to finish: data -> bottlenecks -> head -> evaluation -> ONNX export -> report."""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from runtime import Classifier, __version__
from runtime.imaging import RESIZE_METHOD, load_for_model
from runtime.metadata import ModelMetadata
from train.atomic import write_atomically
from train.backbones import DEFAULT_ARCH, get_backbone
from train.bottleneck import compute_bottlenecks
from train.cache import BottleneckCache
from train.data import SPLITS, Dataset, DatasetError, LabeledImage, LabelSource, load_dataset
from train.edge import EdgeConfig, make_variants
from train.evaluate import evaluate, print_report
from train.export import export_onnx, fuse
from train.engines import EngineConfig, WorkerSpec
from train.extractor import EXTRACTOR_FILE, onnx_extractor
from train.head import HeadConfig, predict_views, train_head
from train.views import symmetry_views

#: Test images used for the ONNX-vs-TensorFlow parity check at export.
PARITY_IMAGES = 16
#: Test images shown in the closing "Classifying multiple images" demo.
DEMO_IMAGES = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; `train-model`'s flags map one to one onto it."""

    data_dir: Path
    export: Path = Path("model.onnx")
    arch: str = DEFAULT_ARCH
    weights: str | None = None
    image_size: tuple[int, int] | None = None
    labels_from: LabelSource = LabelSource.folder
    split: tuple[float, float, float] = (0.7, 0.15, 0.15)
    group_pattern: str | None = None
    workspace: Path = Path(".retrain-cache")
    bottleneck_batch_size: int = 32
    views: int = 8
    seed: int = 0
    head: HeadConfig = field(default_factory=HeadConfig)
    #: int8 / fp16 variants written next to the fp32 model (none by default).
    edge: EdgeConfig = field(default_factory=lambda: EdgeConfig(int8=False, fp16=False))
    #: Where the bottleneck phase runs (this process by default).
    engine: EngineConfig = field(default_factory=EngineConfig)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the model file, its report file and the report itself."""

    model_path: Path
    report_path: Path
    report: dict[str, object]


def report_path_for(model_path: Path) -> Path:
    """`model.onnx` -> `model.report.json`."""
    return model_path.with_name(f"{model_path.stem}.report.json")


def run(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Train, evaluate and export as `config` says; print progress to `console`."""
    console = console or Console(soft_wrap=True, highlight=False)
    started = time.perf_counter()
    seed = config.seed
    dataset = load_dataset(config.data_dir, config.labels_from, config.split, seed, config.group_pattern)
    _print_counts(dataset, console)
    duplicates = dataset.duplicates_across_classes()
    for group in duplicates:
        console.print(f"[yellow]warning[/yellow] the same image is filed under several classes: {' = '.join(group)}")

    backbone = get_backbone(config.arch, config.weights, config.image_size, seed)
    views = symmetry_views(config.views, backbone.input_size)
    console.print(
        f"Backbone: {backbone.spec.name} | weights {backbone.weights_identity} | input {backbone.input_size} | "
        f"views {len(views)}"
    )
    extractor = backbone.build_extractor()
    cache = BottleneckCache(config.workspace, backbone)
    extract = onnx_extractor(extractor, cache.directory)
    spec = WorkerSpec(cache.directory / EXTRACTOR_FILE, backbone.input_size, tuple(views))
    bottleneck_started = time.perf_counter()
    bottlenecks = compute_bottlenecks(
        [image.path for image in dataset.images], spec, cache, extract, config.bottleneck_batch_size, console, config.engine
    )
    bottleneck_seconds = time.perf_counter() - bottleneck_started
    usable = [image for image in dataset.images if image.path in bottlenecks.features]

    def arrays(split: str) -> tuple[np.ndarray, np.ndarray, list[LabeledImage]]:
        """Features (images, views, feature_dim), label indices and images of one split."""
        images = [image for image in usable if image.split == split]
        shape = (0, len(views), backbone.spec.feature_dim)
        features = np.stack([bottlenecks.features[image.path] for image in images]) if images else np.zeros(shape, np.float32)
        labels = np.array([dataset.labels.index(image.label) for image in images], dtype=np.int64)
        return features, labels, images

    train_x, train_y, _ = arrays("train")
    if len(set(train_y.tolist())) < 2:
        raise DatasetError(f"{dataset.root}: fewer than two classes have readable training images")
    val_x, val_y, _ = arrays("validation")
    head = train_head((train_x, train_y), (val_x, val_y), len(dataset.labels), config.head, report=console.print)
    console.print(f"Head: logistic regression with C = {head.c:g} (lowest validation cross-entropy of {len(head.candidates)} tried)")

    test_x, test_y, test_images = arrays("test")
    if not test_images:
        raise DatasetError(f"{dataset.root}: the test split is empty; add images or change --split")
    test_probabilities = predict_views(head.model, test_x)  # what the exported model computes
    test_report = evaluate(test_probabilities, test_y, dataset.labels, [image.relative for image in test_images])
    print_report(test_report, console)

    metadata = ModelMetadata(
        labels=dataset.labels,
        input_height=backbone.input_size[0],
        input_width=backbone.input_size[1],
        resize_method=RESIZE_METHOD,
        backbone=backbone.spec.name,
        weights=backbone.weights_identity,
        preprocessing=backbone.preprocessing.name,
        views=len(views),
        split={
            "proportions": list(config.split),
            "seed": seed,
            "labels_from": config.labels_from.value,
            "group_pattern": config.group_pattern,
        },
        toolkit_version=__version__,
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        test_metrics={key: test_report[key] for key in ("images", "accuracy", "balanced_accuracy", "log_loss")},
    )
    parity_pixels = np.stack([load_for_model(image.path, backbone.input_size) for image in test_images[:PARITY_IMAGES]])
    exported = export_onnx(fuse(extractor, head.model, views), metadata, config.export, parity_pixels)
    console.print(
        f"Exported {exported.path} (opset {exported.opset}); parity on {exported.parity_images} test images: "
        f"max |p_onnx - p_tf| = {exported.max_abs_difference:.1e} (tolerance {exported.tolerance:.0e})"
    )

    report = {
        "model": str(exported.path),
        "metadata": metadata.to_props(),
        "config": _config_dict(config),
        "split_counts": dataset.counts(),
        "skipped_images": [str(failure) for failure in bottlenecks.failures],
        "duplicates_across_classes": duplicates,
        "bottlenecks": {"computed": bottlenecks.computed, "reused": bottlenecks.reused, "seconds": round(bottleneck_seconds, 2)},
        "head": {"c": head.c, "candidates": head.candidates},
        "test": test_report,
        "export": {"opset": exported.opset, "parity_images": exported.parity_images, "max_abs_difference": exported.max_abs_difference, "tolerance": exported.tolerance},
        "seconds": round(time.perf_counter() - started, 2),
    }
    report_path = report_path_for(exported.path)
    write_atomically(report_path, json.dumps(report, indent=2).encode("utf-8"))
    console.print(f"Report: {report_path}")
    _demo(Classifier(exported.path, providers="cpu"), test_images, console)
    if config.edge.precisions:
        report["edge_variants"] = make_variants(exported.path, dataset, replace(config.edge, seed=seed), console)
        report["seconds"] = round(time.perf_counter() - started, 2)
        write_atomically(report_path, json.dumps(report, indent=2).encode("utf-8"))
    return TrainResult(model_path=exported.path, report_path=report_path, report=report)


def _print_counts(dataset: Dataset, console: Console) -> None:
    counts = dataset.counts()
    table = Table("class", *SPLITS, title=f"{dataset.root}: {len(dataset.images)} images")
    for label in dataset.labels:
        table.add_row(label, *(str(counts[split].get(label, 0)) for split in SPLITS))
    console.print(table)


def _demo(classifier: Classifier, test_images: list[LabeledImage], console: Console) -> None:
    """The original sample's closing lines, produced by the exported model in the runtime."""
    console.print("Classifying single image")
    _demo_lines(classifier, test_images[:1], console)
    console.print("Classifying multiple images")
    by_label: dict[str, list[LabeledImage]] = {}
    for image in test_images:
        by_label.setdefault(image.label, []).append(image)
    mixed = [image for group in itertools.zip_longest(*by_label.values()) for image in group if image is not None]
    _demo_lines(classifier, mixed[:DEMO_IMAGES], console)


def _demo_lines(classifier: Classifier, images: list[LabeledImage], console: Console) -> None:
    predictions = classifier.predict_batch([image.path for image in images])
    for image, prediction in zip(images, predictions):
        console.print(f"Image: {image.path.name} | Actual Value: {image.label} | Predicted Value: {prediction.label}", highlight=False)


def _config_dict(config: TrainConfig) -> dict[str, object]:
    return json.loads(json.dumps(asdict(config), default=str))
