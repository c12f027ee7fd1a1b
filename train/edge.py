"""Edge variants of an exported model: int8 (CPU) and fp16 (GPU), each checked on the test split.

For each variant: convert into a temporary file beside the target, classify the same held-out test
images with the fp32 model and the variant through the runtime, compare accuracy, balanced accuracy
and agreement (share of identical predictions), and refuse (nothing written) when the variant loses
more than the tolerance, unless forced. The comparison goes into the variant's metadata
(`conversion`) and into `VARIANT.report.json`. Used by `train-model --quantize int8 --half` and by
`quantize-model`; needs onnx and onnxruntime, not TensorFlow.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from rich.console import Console

from runtime import Classifier
from runtime.errors import ImageError, RetrainOnnxError
from runtime.imaging import try_load_for_model
from runtime.metadata import ModelMetadata
from runtime.output import prepare_output
from train.atomic import atomic_output, file_sha256, write_atomically
from train.console import flagged, print_skipped
from train.data import Dataset, LabeledImage, fingerprint
from train.evaluate import evaluate
from train.fp16 import convert_fp16
from train.model_files import PRECISIONS, report_path_for, variant_path
from train.int8 import quantize_int8, usable_calibration
from train.int8_head import distil_int8_head
from train.onnx_metadata import write_metadata

#: Training images used to calibrate int8 activation ranges.
CALIBRATION_IMAGES = 100
#: Most training images the int8 head is distilled on (`train.int8_head`): a stratified sample beyond this.
DISTILLATION_IMAGES = 1000
#: Largest accepted accuracy loss of a variant, in percentage points.
TOLERANCE_POINTS = 1.0


class AccuracyGateError(RetrainOnnxError):
    """A variant lost more accuracy than allowed; it was not written. `written` holds the summaries of the
    variants that passed (and were written), `refusals` one line per refused variant."""

    def __init__(self, refusals: list[str], written: list[dict[str, object]]) -> None:
        super().__init__(" | ".join(refusals))
        self.refusals, self.written = refusals, written


class _Refused(Exception):
    """One variant's refusal by the gate, raised inside its atomic write so nothing is written."""


@dataclass(frozen=True)
class EdgeConfig:
    """Which variants to make and how strictly to check them."""

    int8: bool = True
    fp16: bool = False
    calibration_images: int = CALIBRATION_IMAGES
    tolerance_points: float = TOLERANCE_POINTS
    force: bool = False
    seed: int = 0

    @property
    def precisions(self) -> list[str]:
        """The variants asked for, in the order they are made."""
        return [name for name, wanted in zip(PRECISIONS, (self.int8, self.fp16)) if wanted]


def calibration_sample(images: Sequence[LabeledImage], count: int, seed: int) -> list[LabeledImage]:
    """`count` images drawn per class in proportion to its size (at least one each), reproducibly."""
    by_label: dict[str, list[LabeledImage]] = {}
    for image in images:
        by_label.setdefault(image.label, []).append(image)
    rng = random.Random(seed)
    sample = []
    for label, members in sorted(by_label.items()):
        quota = max(1, round(count * len(members) / len(images)))
        sample += rng.sample(members, min(quota, len(members)))
    return sample


def prepare_variant_outputs(model_path: Path, precisions: Sequence[str]) -> None:
    """Check (see `runtime.output.prepare_output`) that each variant of `model_path` and its report can be
    written, so a path in the way fails in one line before any calibration."""
    for precision in precisions:
        target = variant_path(model_path, precision)
        for path in (target, report_path_for(target)):
            prepare_output(path)


@dataclass(frozen=True)
class _Baseline:
    """The fp32 model on the held-out test images: what every variant is compared with."""

    model: Classifier
    labels: list[str]
    files: list[str]
    truth: np.ndarray
    relative: list[str]
    probabilities: np.ndarray
    unreadable: list[ImageError]
    source: dict[str, object]
    #: Test-split images left out because the model saw them in training or validation (`held_out`).
    left_out: int

    @cached_property
    def report(self) -> dict[str, object]:
        """The fp32 model's own evaluation on these images."""
        return self.evaluate(self.probabilities)

    def evaluate(self, probabilities: np.ndarray) -> dict[str, object]:
        """`train.evaluate.evaluate` of `probabilities` on these images, with the model's decision threshold."""
        return evaluate(probabilities, self.truth, self.labels, self.relative, self.model.metadata.decision_threshold)


def make_variants(model_path: Path, dataset: Dataset, config: EdgeConfig, console: Console) -> list[dict[str, object]]:
    """Make, check and write each variant `config` asks for; return one summary per written variant.

    Test images the model was trained or validated on (its metadata keeps their fingerprints) are left
    out of the check, with a warning: a renamed, relabelled or changed folder rebuilds another split.
    Raises `AccuracyGateError` (after writing every variant that passed) when a variant loses more
    than `config.tolerance_points` of accuracy or balanced accuracy and `config.force` is off, and
    `RetrainOnnxError` when `model_path` is itself an int8 or fp16 variant.
    """
    reference = Classifier(model_path, providers="cpu")
    if reference.metadata.precision != "fp32":
        made_from = reference.metadata.conversion.get("source", {}).get("model", "the fp32 model it was made from")
        raise RetrainOnnxError(f"{model_path}: already an {reference.metadata.precision} model; quantize {made_from} instead")
    runtime_only = onnxruntime_only_ops(model_path)
    if runtime_only:
        raise RetrainOnnxError(
            f"{model_path}: an onnxruntime-optimised file (ops {', '.join(runtime_only)}, as `classify --save-optimized` "
            "writes); quantize the model it was saved from instead"
        )
    source = {"model": model_path.name, "sha256": file_sha256(model_path), "bytes": model_path.stat().st_size}
    try:
        summaries, refusals = _make_each(reference, source, model_path, dataset, config, console)
    except RetrainOnnxError:  # stopped early (no readable test or calibration image): old variants are still named
        warn_about_stale_variants(model_path, console, source["sha256"])
        raise
    warn_about_stale_variants(model_path, console, source["sha256"])
    if refusals:
        raise AccuracyGateError(refusals, summaries)
    return summaries


def _make_each(
    reference: Classifier, source: dict[str, object], model_path: Path, dataset: Dataset, config: EdgeConfig, console: Console
) -> tuple[list[dict[str, object]], list[str]]:
    """The summaries of the variants written and the refusals of the others, in `config.precisions` order."""
    test = held_out(dataset, reference.metadata.split.get("seen_fingerprints"), console)
    prepare_variant_outputs(model_path, config.precisions)
    baseline = _baseline(reference, model_path, source, dataset.labels, test, len(dataset.split("test")) - len(test), console)
    training = dataset.split("train")
    samples = _Samples(
        calibration_sample(training, config.calibration_images, config.seed), calibration_sample(training, DISTILLATION_IMAGES, config.seed)
    )
    summaries, refusals = [], []
    for precision in config.precisions:
        try:
            summaries.append(_make_variant(precision, model_path, baseline, samples, config, console))
        except _Refused as refusal:
            refusals.append(str(refusal))
            console.print(flagged("refused:", refusal, "red"))  # and the next variant is still made
    return summaries, refusals


def warn_about_stale_variants(model_path: Path, console: Console, model_sha256: str | None = None) -> None:
    """Warn about each int8/fp16 file beside `model_path` that was made from another model (an earlier
    export, or a refused variant's predecessor): it is left as it was, and it is not this model's variant.
    `model_sha256` is the model's SHA-256 when the caller has it already (hashed here otherwise)."""
    current = model_sha256 or file_sha256(model_path)
    for precision in PRECISIONS:
        target = variant_path(model_path, precision)
        if not target.is_file():
            continue
        source = _source_sha256(target)
        if source != current:
            problem = "was made from another model than" if source else "is not a variant whose metadata says it was made from"
            report = report_path_for(target)
            kept = f"{target} and its report {report}" if report.is_file() else str(target)
            console.print(flagged("warning:", f"{target} {problem} {model_path} as it is now; "
                                  f"left as it was (delete {kept}, or make it again with quantize-model)"))


def _source_sha256(variant: Path) -> str | None:
    """The SHA-256 of the fp32 model `variant` was made from, as its metadata records it; None when the
    file cannot be read as a variant of this toolkit."""
    try:
        props = {prop.key: prop.value for prop in onnx.load(variant, load_external_data=False).metadata_props}
        source = ModelMetadata.from_props(props, str(variant)).conversion.get("source", {})
    except Exception:  # unreadable, not ONNX, or not ours: onnx and the metadata parser raise many types
        return None
    return source.get("sha256") if isinstance(source, dict) else None


def onnxruntime_only_ops(model_path: Path) -> list[str]:
    """The op types of `model_path` outside the ONNX standard (`domain:op`), such as the
    `com.microsoft.nchwc` layout ops of a file onnxruntime saved after optimising it for one machine:
    the quantizer and the float16 converter cannot take those."""
    graph = onnx.load(model_path, load_external_data=False).graph
    return sorted({f"{node.domain}:{node.op_type}" for node in graph.node if node.domain not in ("", "ai.onnx")})


def _baseline(
    reference: Classifier, model_path: Path, source: dict[str, object], labels: list[str], test: list[LabeledImage], left_out: int,
    console: Console,
) -> _Baseline:
    files, probabilities, unreadable = _classify(reference, [image.path for image in test])
    print_skipped(unreadable, console)
    if not files:
        raise RetrainOnnxError(f"{model_path}: none of the {len(test)} held-out test images could be read; cannot check edge variants")
    by_path = {str(image.path): image for image in test}
    truth = np.array([labels.index(by_path[file].label) for file in files])
    relative = [by_path[file].relative for file in files]
    return _Baseline(reference, labels, files, truth, relative, probabilities, unreadable, source, left_out)


@dataclass(frozen=True)
class _Samples:
    """The training images int8 calibrates on and distils its head on (stratified samples)."""

    calibration: list[LabeledImage]
    distillation: list[LabeledImage]


def _make_variant(
    precision: str, model_path: Path, baseline: _Baseline, samples: _Samples, config: EdgeConfig, console: Console
) -> dict[str, object]:
    """Convert, check and write one variant with its report; `_Refused` (nothing written) when the gate refuses it."""
    target = variant_path(model_path, precision)
    started = time.perf_counter()
    with atomic_output(target) as temporary:  # `_Refused` raised inside removes the temporary file
        conversion = _convert(precision, model_path, temporary, samples, baseline.model, console)
        _stamp(temporary, replace(baseline.model.metadata, precision=precision, conversion={}))
        _, probabilities, _ = _classify(Classifier(temporary, providers="cpu"), baseline.files)
        report = baseline.evaluate(probabilities)
        comparison = compare(baseline.report, report, baseline.probabilities, probabilities)
        summary = {
            "precision": precision,
            "model": target.name,
            "source": baseline.source,
            "bytes": temporary.stat().st_size,
            "size_vs_fp32": round(temporary.stat().st_size / baseline.source["bytes"], 4),
            **conversion,
            **comparison,
            "tolerance_points": config.tolerance_points,
            "test_skipped": [str(error) for error in baseline.unreadable],
            "test_left_out_as_seen": baseline.left_out,
            "forced": False,
            "seconds": round(time.perf_counter() - started, 1),
        }
        fp32 = baseline.report
        if comparison["loss_points"] > config.tolerance_points:
            loss = (
                f"{target}: {precision} loses {comparison['loss_points']:.2f} points on "
                f"{len(baseline.files)} test images (accuracy {fp32['accuracy']:.4f} -> {report['accuracy']:.4f}, "
                f"balanced {fp32['balanced_accuracy']:.4f} -> {report['balanced_accuracy']:.4f}), more than "
                f"the tolerance of {config.tolerance_points:g}"
            )
            if not config.force:
                raise _Refused(f"{loss}; not written (--force writes it anyway)")
            console.print(flagged("warning:", f"{loss}; written because of --force"))
            summary["forced"] = True
        own_metrics = {key: report[key] for key in ("images", "accuracy", "balanced_accuracy", "log_loss")}
        _stamp_with_own_size(temporary, replace(baseline.model.metadata, precision=precision, test_metrics=own_metrics), summary)
    write_atomically(report_path_for(target), json.dumps({**summary, "test": report}, indent=2).encode())
    console.print(
        f"{precision}: {target} ({summary['size_vs_fp32']:.0%} of fp32) | test accuracy {report['accuracy']:.4f} "
        f"(fp32 {fp32['accuracy']:.4f}) | balanced {report['balanced_accuracy']:.4f} "
        f"(fp32 {fp32['balanced_accuracy']:.4f}) | agreement {comparison['agreement']:.1%} on {len(baseline.files)} images"
    )
    return summary


def held_out(dataset: Dataset, seen: Sequence[str] | None, console: Console) -> list[LabeledImage]:
    """The test split of `dataset` without the images the model was trained or validated on (`seen`: their
    fingerprints, from the model's metadata; None for models exported before it was recorded)."""
    test = dataset.split("test")
    if seen is None:
        console.print(flagged("note:", "the model records no fingerprints of its training images (exported by an older "
                              "version); the check trusts that this folder is the one it was trained on, unchanged"))
    else:
        known = set(seen)
        unseen = [image for image in test if _fingerprint_of(image.path) not in known]
        if len(unseen) < len(test):
            console.print(flagged(
                "warning:", f"{len(test) - len(unseen)} of the {len(test)} test images have the same bytes as images the model "
                "was trained or validated on (copies under other names, or the folder was renamed, relabelled or changed "
                "since training); left out of the check",
            ))
        test = unseen
    if not test:
        raise RetrainOnnxError(f"{dataset.root}: no held-out test images (the test split is empty or the model saw them all); cannot check edge variants")
    return test


def _fingerprint_of(path: Path) -> str | None:
    try:
        return fingerprint(file_sha256(path))
    except OSError:
        return None  # unreadable: classifying it reports the problem


def compare(fp32: dict, variant: dict, fp32_probabilities: np.ndarray, probabilities: np.ndarray) -> dict[str, object]:
    """Accuracy of both models, agreement, and the loss in points (the larger of the two metrics' drops)."""
    loss = max(fp32["accuracy"] - variant["accuracy"], fp32["balanced_accuracy"] - variant["balanced_accuracy"])
    return {
        "test_images": int(len(probabilities)),
        "fp32": {"accuracy": fp32["accuracy"], "balanced_accuracy": fp32["balanced_accuracy"]},
        "variant": {"accuracy": variant["accuracy"], "balanced_accuracy": variant["balanced_accuracy"]},
        "agreement": float(np.mean([a["predicted"] == b["predicted"] for a, b in zip(fp32["predictions"], variant["predictions"])])),
        "max_abs_probability_difference": float(np.abs(fp32_probabilities - probabilities).max()),
        "loss_points": round(100 * loss, 4),
    }


def _convert(precision: str, source: Path, target: Path, samples: _Samples, model: Classifier, console: Console) -> dict[str, object]:
    if precision == "fp16":
        convert_fp16(source, target)
        return {"method": "onnxruntime float16 converter, uint8 input and float32 outputs kept"}
    paths = list(dict.fromkeys(image.path for image in (*samples.calibration, *samples.distillation)))
    decoded = dict(zip(paths, (try_load_for_model(path, model.input_size) for path in paths)))
    skipped = [item for item in decoded.values() if isinstance(item, ImageError)]
    print_skipped(skipped, console)
    readable = {path: item for path, item in decoded.items() if not isinstance(item, ImageError)}
    pixels = [readable[image.path] for image in samples.calibration if image.path in readable]
    if not pixels:
        raise RetrainOnnxError(f"{source}: none of the {len(samples.calibration)} calibration images could be read; cannot calibrate int8")
    pixels = usable_calibration(pixels)  # what quantize_int8 uses: a multiple of its calibration stride
    console.print(f"int8: calibrating on {len(pixels)} training images (stratified), QDQ, per-channel weights")
    kept = quantize_int8(source, target, pixels)
    distillation = np.array([readable[image.path] for image in samples.distillation if image.path in readable], np.uint8)
    console.print(f"int8: distilling the head from fp32 on {len(distillation)} training images")
    head = distil_int8_head(source, target, distillation, model.metadata.decision_threshold, model.labels)
    return {
        "method": "onnxruntime quantize_static, QDQ, per-channel int8 weights, uint8 activations, min/max calibration, bias correction",
        "calibration_images": len(pixels),
        "training_skipped": [str(error) for error in skipped],
        "float32_nodes": kept,
        "head": head,
    }


def _classify(classifier: Classifier, paths: Sequence[str | Path]) -> tuple[list[str], np.ndarray, list[ImageError]]:
    """Probabilities for the decodable `paths`, with their file names, and the errors of the others."""
    everything = list(classifier.classify_files(paths))
    results = [result for result in everything if result.prediction is not None]
    labels = classifier.labels
    probabilities = np.array([[result.prediction.probabilities[label] for label in labels] for result in results], np.float32)
    return [result.file for result in results], probabilities, [result.error for result in everything if result.error is not None]


def _stamp_with_own_size(path: Path, metadata: ModelMetadata, summary: dict[str, object]) -> None:
    """Stamp `metadata` with `summary` as its `conversion` into `path`, after setting the summary's `bytes`
    and `size_vs_fp32` to the stamped file's size (the summary is the report's too). The size is inside the
    file, so a few rounds settle it; in the rare case that the ratio's rounding keeps changing the length
    (0.2999 -> 0.3), the figures last stamped are kept, so the metadata and the reports still agree (a
    byte or two off the file)."""
    proto = onnx.load(path)
    for _ in range(4):  # sized in memory: the serialised size is the file's
        write_metadata(proto, replace(metadata, conversion=summary))
        stamped = {key: summary[key] for key in ("bytes", "size_vs_fp32")}
        size = proto.ByteSize()
        if size == summary["bytes"]:
            break
        summary.update(bytes=size, size_vs_fp32=round(size / summary["source"]["bytes"], 4))
    else:
        summary.update(stamped)
    onnx.save(proto, path)


def _stamp(path: Path, metadata: ModelMetadata) -> None:
    proto = onnx.load(path)
    write_metadata(proto, metadata)
    onnx.save(proto, path)


