"""One training run, start to finish: data -> bottlenecks -> head -> evaluation -> ONNX export -> report."""

from __future__ import annotations

import io
import itertools
import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
from rich.console import Console
from rich.table import Table

from runtime import Classifier, __version__
from runtime.errors import ImageError, OutputError
from runtime.imaging import RESIZE_METHOD, is_image_file, load_for_model
from runtime.metadata import DecisionThreshold, ModelMetadata
from runtime.output import prepare_folder, prepare_output
from train.atomic import write_atomically
from train.backbones import DEFAULT_ARCH, RANDOM_WEIGHTS, Backbone, get_backbone
from train.bottleneck import compute_bottlenecks
from train.cache import BottleneckCache
from train.console import flagged, print_skipped, training_console
from train.data import (
    SPLITS, Dataset, DatasetError, LabeledImage, LabelSource, copies_of_earlier_splits, fingerprint, load_dataset, unlabelled_note,
)
from train.edge import AccuracyGateError, EdgeConfig, make_variants, prepare_variant_outputs, warn_about_stale_variants
from train.evaluate import evaluate, print_report
from train.export import export_onnx, fuse
from train.engines import EngineConfig, WorkerSpec
from train.augment import augmented_views
from train.extractor import EXTRACTOR_FILE, onnx_extractor
from train.fine_tune import FineTuneConfig, FineTuneResult, fine_tune
from train.html_report import prepare_report, write_html_report
from train.model_files import model_stem, report_path_for
from train.threshold import choose_threshold
from train.head import HeadConfig, describe_choice, predict_views, train_head
from train.views import symmetry_views

#: Test images used for the ONNX-vs-TensorFlow parity check at export.
PARITY_IMAGES = 16
#: Test images shown in the closing "Classifying multiple images" demo.
DEMO_IMAGES = 10
#: Images filed under several classes named one per line; the rest are counted in one line.
SHOWN_DUPLICATES = 5


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
    #: Seeded augmented views per training image, cached like any feature (0: none).
    augment: int = 0
    #: End-to-end training of the top backbone layers after the head (none by default).
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    #: Two classes: the class the decision threshold is about (default: the second label).
    positive: str | None = None
    #: Two classes: choose the threshold for this recall of `positive` instead of the best balanced accuracy.
    target_recall: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the model file, its report file and the report itself."""

    model_path: Path
    report_path: Path
    report: dict[str, object]


def run(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Train, evaluate and export as `config` says; print progress to `console`."""
    console = console or training_console()
    started = time.perf_counter()
    seed = config.seed
    config.engine.check_installed()
    dataset = load_dataset(config.data_dir, config.labels_from, config.split, seed, config.group_pattern)
    _refuse_export_into_the_data(config)
    prepare_output(config.export)  # a bad --export, report, variant or --workspace fails now, not after the training
    prepare_report(model_stem(config.export))
    prepare_variant_outputs(config.export, config.edge.precisions)
    prepare_folder(config.workspace)
    _print_counts(dataset, console)
    if dataset.unlabelled:
        console.print(flagged("note:", unlabelled_note(dataset.unlabelled, config.labels_from)))
    for note in dataset.classless:
        console.print(flagged("note:", note))
    print_skipped(dataset.unreadable, console)
    _check_before_work(dataset, config)
    duplicates = dataset.duplicates_across_classes()
    for group in duplicates[:SHOWN_DUPLICATES]:
        console.print(flagged("warning:", f"the same image is filed under several classes: {' = '.join(group)}"))
    if len(duplicates) > SHOWN_DUPLICATES:
        console.print(flagged("warning:", f"and {len(duplicates) - SHOWN_DUPLICATES} more images filed under several classes "
                              f"({len(duplicates)} in all, listed in the report's duplicates_across_classes)"))

    backbone = get_backbone(config.arch, config.weights, config.image_size, seed)
    views = symmetry_views(config.views, backbone.input_size)
    console.print(
        f"Backbone: {backbone.spec.name} | weights {backbone.weights_identity} | input {backbone.input_size} | "
        f"views {len(views)}"
    )
    if backbone.weights == RANDOM_WEIGHTS:
        console.print(flagged("note:", "random weights (--weights none) give features that barely differ between images: "
                              "a model for tests and speed checks, not for use"))
    extractor = backbone.build_extractor()
    cache = BottleneckCache(config.workspace, backbone)
    extract = onnx_extractor(extractor, cache.directory)
    spec = WorkerSpec(cache.directory / EXTRACTOR_FILE, backbone.input_size, tuple(views))
    bottleneck_started = time.perf_counter()
    bottlenecks = compute_bottlenecks(
        [image.path for image in dataset.images], spec, cache, extract, config.bottleneck_batch_size, console, config.engine
    )
    copies = copies_of_earlier_splits(dataset, bottlenecks.content_hashes)
    if copies:
        console.print(flagged("warning:", _copies_note(copies)))
    left_out = {image.path for images in copies.values() for image in images}
    usable = {path: features for path, features in bottlenecks.features.items() if path not in left_out}
    splits = _split_features(dataset, usable, (len(views), backbone.spec.feature_dim))
    train_x, train_y, train_images = splits["train"]
    skipped = [*dataset.unreadable, *bottlenecks.failures]
    bottleneck_counts: dict[str, object] = {
        "computed": bottlenecks.computed, "views_computed": bottlenecks.views_computed, "reused": bottlenecks.reused
    }
    if config.augment:
        augmented = compute_bottlenecks(
            [image.path for image in train_images], replace(spec, views=tuple(augmented_views(config.augment, seed))),
            cache, extract, config.bottleneck_batch_size, console, config.engine,
        )
        train_x, train_y, train_images = _with_augmented(train_x, train_y, train_images, augmented.features)
        skipped += augmented.failures
        bottleneck_counts["augmented"] = {"computed": augmented.computed, "reused": augmented.reused, "views_each": config.augment}
    bottleneck_counts["seconds"] = round(time.perf_counter() - bottleneck_started, 2)  # augmented views included
    _check_each_class_has_readable_training_images(dataset, train_y, skipped)
    val_x, val_y, val_images = splits["validation"]
    head = train_head((train_x, train_y), (val_x, val_y), len(dataset.labels), config.head, report=console.print)
    console.print(f"Head: logistic regression with C = {head.c:g} ({describe_choice(head, config.head)})")

    test_x, test_y, test_images = splits["test"]
    if not test_images:
        why = "could be read (see the skipped images above)" if "test" not in copies else "is left: unreadable (see above) or copies of training or validation images"
        raise DatasetError(f"{dataset.root}: none of the {len(dataset.split('test'))} test images {why}")
    test_files = [image.relative for image in test_images]
    fused = fuse(extractor, head.model, views)
    val_probabilities, test_probabilities = predict_views(head.model, val_x), predict_views(head.model, test_x)
    fine_tuning = None
    if config.fine_tune.layers:
        # Head only, judged the same way as the fine-tuned model: with its own validation-chosen threshold.
        head_threshold = _threshold(dataset, val_probabilities, val_y, config, Console(file=io.StringIO(), markup=False))
        head_only = evaluate(test_probabilities, test_y, dataset.labels, test_files, head_threshold)
        fine_tuning = {**asdict(config.fine_tune), "head_only": _summary(head_only)}
        labelled = {"train": (train_images, train_y), "validation": (val_images, val_y), "test": (test_images, test_y)}
        tuned, val_probabilities, test_probabilities = _fine_tune(fused, extractor, labelled, backbone.input_size, config, console)
        fine_tuning |= {"curves": tuned.curves, "kept_epoch": tuned.kept_epoch, "trained_layers": tuned.trained_layers}
    threshold = _threshold(dataset, val_probabilities, val_y, config, console)
    test_report = evaluate(test_probabilities, test_y, dataset.labels, test_files, threshold)  # what the exported model computes
    print_report(test_report, console)
    if fine_tuning:
        fine_tuning["fine_tuned"] = _summary(test_report)
        console.print(f"Test split, head only vs fine-tuned: {fine_tuning['head_only']} -> {fine_tuning['fine_tuned']}")

    seen = {fingerprint(bottlenecks.content_hashes[image.path]) for image in (*train_images, *val_images)}
    metadata = _metadata(config, dataset, backbone, len(views), test_report, threshold, sorted(seen))
    parity_pixels = np.stack([load_for_model(image.path, backbone.input_size) for image in test_images[:PARITY_IMAGES]])
    exported = export_onnx(fused, metadata, config.export, parity_pixels)
    console.print(
        f"Exported {exported.path} (opset {exported.opset}); parity on {exported.parity_images} test images: "
        f"max |p_onnx - p_tf| = {exported.max_abs_difference:.1e} (tolerance {exported.tolerance:.0e})"
    )

    report = {
        "model": str(exported.path),
        "metadata": metadata.to_props(),
        "config": _config_dict(config),
        "split_counts": dataset.counts(),  # files found, readable or not
        "images_used": {name: dict(Counter(image.label for image in images)) for name, images in (("train", train_images), ("validation", val_images), ("test", test_images))},
        "skipped_images": [str(failure) for failure in skipped],
        "duplicates_across_classes": duplicates,
        "copies_left_out": {name: [image.relative for image in images] for name, images in copies.items()},
        "bottlenecks": bottleneck_counts,
        "head": {"c": head.c, "candidates": head.candidates, "augmented_views": config.augment},
        "decision_threshold": asdict(threshold) if threshold else None,
        "fine_tune": fine_tuning,
        "test": test_report,
        "export": {"opset": exported.opset, "parity_images": exported.parity_images, "max_abs_difference": exported.max_abs_difference, "tolerance": exported.tolerance},
        "seconds": round(time.perf_counter() - started, 2),
    }
    report_path = report_path_for(exported.path)
    write_atomically(report_path, json.dumps(report, indent=2).encode("utf-8"))
    page, *_ = write_html_report(
        test_report, model_stem(exported.path), dataset.root, f"{exported.path.name}: {backbone.spec.name} on {dataset.root}",
        curves=fine_tuning["curves"] if fine_tuning else head.candidates, curve_axis="epoch" if fine_tuning else "C",
        positive=threshold.positive if threshold else None,
        comparison={"head only": fine_tuning["head_only"], _fine_tuned_name(fine_tuning["kept_epoch"]): fine_tuning["fine_tuned"]}
        if fine_tuning else None,
    )
    console.print(f"Report: {report_path} and {page}")
    _demo(Classifier(exported.path, providers="cpu"), test_images, console)
    if not config.edge.precisions:
        warn_about_stale_variants(exported.path, console)
    else:
        try:
            report["edge_variants"] = make_variants(exported.path, dataset, replace(config.edge, seed=seed), console)
        except AccuracyGateError as refused:  # the report still says what was made and what was refused
            report["edge_variants"], report["edge_refused"] = refused.written, refused.refusals
            raise
        finally:
            report["seconds"] = round(time.perf_counter() - started, 2)
            write_atomically(report_path, json.dumps(report, indent=2).encode("utf-8"))
    return TrainResult(model_path=exported.path, report_path=report_path, report=report)


def _copies_note(copies: dict[str, list[LabeledImage]]) -> str:
    """One line on the validation and test images left out as copies of images of an earlier split."""
    counted = " and ".join(f"{len(images)} {name} image(s)" for name, images in copies.items())
    return (
        f"{counted} have the same bytes as images of an earlier split (training, or validation for test), though "
        "named otherwise; left out of their split so they cannot flatter its scores (listed in the report's copies_left_out)"
    )


def _fine_tuned_name(kept_epoch: int) -> str:
    """How the report's comparison table names the exported fine-tuning outcome."""
    return f"fine-tuned (kept epoch {kept_epoch})" if kept_epoch else "fine-tuned (no epoch kept: head only)"


def _with_augmented(
    features: np.ndarray, labels: np.ndarray, images: list[LabeledImage], augmented: dict[Path, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, list[LabeledImage]]:
    """The training features with each image's augmented views appended; an image whose augmented views
    could not be computed (it became unreadable or changed in between; reported as skipped) is left out."""
    kept = [index for index, image in enumerate(images) if image.path in augmented]
    views = np.stack([augmented[images[index].path] for index in kept]) if kept else np.zeros((0, 0, features.shape[-1]), features.dtype)
    return np.concatenate([features[kept], views], axis=1), labels[kept], [images[index] for index in kept]


def _split_features(
    dataset: Dataset, features: dict[Path, np.ndarray], shape: tuple[int, int]
) -> dict[str, tuple[np.ndarray, np.ndarray, list[LabeledImage]]]:
    """Per split: features (images, views, feature_dim), label indices and the images that have features
    (`shape` is (views, feature_dim), for an empty split)."""
    splits = {}
    for split in SPLITS:
        images = [image for image in dataset.images if image.split == split and image.path in features]
        stacked = np.stack([features[image.path] for image in images]) if images else np.zeros((0, *shape), np.float32)
        splits[split] = (stacked, np.array([dataset.labels.index(image.label) for image in images], dtype=np.int64), images)
    return splits


def _metadata(
    config: TrainConfig, dataset: Dataset, backbone: Backbone, views: int, test_report: dict[str, object], threshold: DecisionThreshold | None,
    seen: list[str],
) -> ModelMetadata:
    """What the exported model carries about itself; `seen` holds the fingerprints of the training and
    validation images, so a later check on a rebuilt test split (`quantize-model`) can leave them out."""
    return ModelMetadata(
        labels=dataset.labels,
        input_height=backbone.input_size[0],
        input_width=backbone.input_size[1],
        resize_method=RESIZE_METHOD,
        backbone=backbone.spec.name,
        weights=backbone.weights_identity,
        preprocessing=backbone.preprocessing.name,
        views=views,
        split={
            "proportions": list(config.split),
            "seed": config.seed,
            "labels_from": config.labels_from.value,
            "group_pattern": config.group_pattern,
            "seen_fingerprints": seen,
        },
        toolkit_version=__version__,
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        test_metrics={key: test_report[key] for key in ("images", "accuracy", "balanced_accuracy", "log_loss")},
        decision_threshold=threshold,
    )


def _fine_tune(
    fused: keras.Model,
    extractor: keras.Model,
    splits: dict[str, tuple[list[LabeledImage], np.ndarray]],
    input_size: tuple[int, int],
    config: TrainConfig,
    console: Console,
) -> tuple[FineTuneResult, np.ndarray, np.ndarray]:
    """Fine-tune `fused` in place on the training images; return the curves and kept epoch, and the kept
    model's validation and test probabilities."""
    console.print(f"Fine-tuning the top {config.fine_tune.layers} backbone layers for {config.fine_tune.epochs} epochs")
    pixels = {name: _pixels(images, input_size) for name, (images, _) in splits.items()}
    labels = {name: labels for name, (_, labels) in splits.items()}
    tuned = fine_tune(fused, extractor, (pixels["train"], labels["train"]), (pixels["validation"], labels["validation"]), config.fine_tune, config.seed)
    if tuned.trained_layers < config.fine_tune.layers:
        console.print(flagged("warning:", f"the backbone has only {tuned.trained_layers} layers that train (batch normalisation excepted); all of them were trained"))
    for epoch in tuned.curves:
        console.print("Fine-tuning: " + ", ".join(f"{key} {value:.4f}" if key != "epoch" else f"epoch {value}" for key, value in epoch.items()))
    if not len(pixels["validation"]):
        console.print(f"Fine-tuning: kept the last epoch ({tuned.kept_epoch}); no validation images to choose by")
    elif tuned.kept_epoch:
        console.print(f"Fine-tuning: kept epoch {tuned.kept_epoch} (lowest validation loss)")
    else:
        console.print("Fine-tuning: kept the head-only model (no epoch lowered the validation loss)")
    validation, test = (
        np.asarray(fused.predict(pixels[name], batch_size=8, verbose=0)) if len(pixels[name]) else np.zeros((0, fused.output_shape[-1]), np.float32)
        for name in ("validation", "test")
    )
    return tuned, validation, test


def _pixels(images: list[LabeledImage], input_size: tuple[int, int]) -> np.ndarray:
    """The images decoded and resized as the model takes them (an empty (0, H, W, 3) batch for none)."""
    if not images:
        return np.zeros((0, *input_size, 3), np.uint8)
    return np.stack([load_for_model(image.path, input_size) for image in images])


def _summary(evaluation: dict[str, object]) -> dict[str, float]:
    return {key: round(float(evaluation[key]), 4) for key in ("accuracy", "balanced_accuracy")}


def _threshold(
    dataset: Dataset, probabilities: np.ndarray, labels: np.ndarray, config: TrainConfig, console: Console
) -> DecisionThreshold | None:
    """The two-class operating threshold chosen on the validation split (None for more classes)."""
    if len(dataset.labels) != 2:
        return None
    positive = config.positive or dataset.labels[1]
    column = dataset.labels.index(positive)
    try:
        threshold = choose_threshold(probabilities[:, column], labels == column, positive, config.target_recall)
    except ValueError as error:
        if config.target_recall is not None:
            raise DatasetError(f"{dataset.root}: {error}; add validation images or change --split") from error
        console.print(flagged("warning:", f"no decision threshold: {error}; the most probable class wins"))
        return None
    console.print(
        f"Decision threshold: {positive} when its probability >= {threshold.threshold:.3f} ({threshold.rule}; "
        f"validation recall {threshold.validation['recall']:.3f}, specificity {threshold.validation['specificity']:.3f})"
    )
    return threshold


def _refuse_export_into_the_data(config: TrainConfig) -> None:
    """The model, its report and its PNG plots must not go where the data folder reads images: into a class
    folder, also by the folder a symlinked class folder leads to, or a new sub-folder (which would become a
    class), or anywhere in it with --labels-from filename, the next run would train on the plots; and an
    `--export` named like an image could replace one. Beside the class folders (`DATA/model.onnx`) is fine:
    files there have no label and are left out, with a note."""
    def both(path: Path) -> set[Path]:  # as named and as its symlinks lead (a class folder may be a link)
        return {Path(os.path.abspath(path)), path.resolve()}

    folders = both(config.export.parent)
    roots = both(config.data_dir)
    class_folders = {form for child in config.data_dir.iterdir() if child.is_dir() for form in both(child)}
    in_class_folder = any(folder.is_relative_to(place) for folder in folders for place in class_folders)
    in_data = any(folder.is_relative_to(place) for folder in folders for place in roots)
    beside_the_classes = bool(folders & roots)  # DATA/model.onnx: no label, left out with a note
    if in_class_folder or (in_data and (not beside_the_classes or config.labels_from is LabelSource.filename or is_image_file(config.export))):
        raise OutputError(config.export, f"cannot write inside the data folder {config.data_dir} (the next run would read the model's report plots as images); export elsewhere")


def _check_before_work(dataset: Dataset, config: TrainConfig) -> None:
    """Refuse, before any feature is computed, options the data set cannot satisfy."""
    if len(dataset.labels) != 2 and (config.target_recall is not None or config.positive is not None):
        raise DatasetError(f"{dataset.root}: --positive and --target-recall need exactly two classes, found {len(dataset.labels)}")
    if config.positive is not None and config.positive not in dataset.labels:
        raise DatasetError(f"{dataset.root}: --positive {config.positive!r} is not one of the classes {dataset.labels}")
    if config.target_recall is not None and not dataset.split("validation"):
        raise DatasetError(f"{dataset.root}: --target-recall is met on the validation split, which is empty; change --split")
    if not dataset.split("test"):
        cause = "--split or --group-pattern (each group of files goes to one split)" if config.group_pattern else "--split"
        raise DatasetError(f"{dataset.root}: the test split is empty; add images or change {cause}")


def _check_each_class_has_readable_training_images(dataset: Dataset, train_labels: np.ndarray, skipped: list[ImageError]) -> None:
    """A class none of whose training images could be read would be a label the model never learned."""
    readable = set(train_labels.tolist())
    unlearned = [label for index, label in enumerate(dataset.labels) if index not in readable]
    if unlearned:
        label_of = {str(image.path): image.label for image in dataset.images}
        unreadable = sum(label_of.get(failure.source) in unlearned for failure in skipped)
        raise DatasetError(
            f"{dataset.root}: class(es) {', '.join(unlearned)} have no readable training image "
            f"({unreadable} of their images skipped, listed above); fix or remove them, or move the folder out of the data set"
        )


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
