"""Model quality features: augmented views (seeded, cached), the two-class decision threshold (chosen on
validation, stored in metadata, applied by the runtime), the HTML report, and `evaluate-model`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import solid_image, unboxed
from runtime.classifier import decide
from runtime.errors import ModelError
from runtime.metadata import DecisionThreshold, ModelMetadata
from train.augment import AugmentedView, augmented_views
from train.threshold import choose_threshold


def test_augmented_views_are_seeded_distinct_and_keep_the_shape(assets_dir: Path) -> None:
    from runtime.imaging import load_for_model

    pixels = np.stack([load_for_model(path, (64, 64)) for path in sorted((assets_dir / "CD").glob("*.jpg"))[:3]])
    first, second = augmented_views(2, seed=7)
    assert first.name == "aug7-0" and second.name == "aug7-1"
    one = first.apply(pixels)
    assert one.shape == pixels.shape and one.dtype == np.uint8
    np.testing.assert_array_equal(one, AugmentedView(7, 0).apply(pixels))  # same seed and index: same view
    assert not np.array_equal(one, second.apply(pixels)) and not np.array_equal(one, pixels)
    np.testing.assert_array_equal(one[1], first.apply(pixels[1]))  # a batch is its images one by one
    assert AugmentedView(0, 0).apply(np.zeros((40, 30, 3), np.uint8)).shape == (40, 30, 3)  # non-square: no turn


def test_threshold_stays_at_half_unless_clearly_better_and_meets_a_target_recall() -> None:
    rng = np.random.default_rng(0)
    truth = np.r_[np.zeros(40, bool), np.ones(40, bool)]
    scores = np.clip(np.r_[rng.normal(0.3, 0.15, 40), rng.normal(0.7, 0.15, 40)], 0, 1)
    balanced = choose_threshold(scores, truth, "crack")
    assert balanced.positive == "crack" and abs(balanced.threshold - 0.5) < 0.15
    assert balanced.validation["balanced_accuracy"] > 0.85
    strict = choose_threshold(scores, truth, "crack", target_recall=1.0)
    assert strict.validation["recall"] == 1.0 and strict.threshold <= scores[truth].min()
    assert "recall >= 1" in strict.rule
    shifted = choose_threshold(scores - 0.3, truth, "crack")  # a clearly better point far from 0.5 is taken
    assert shifted.threshold < 0.35
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold(scores[:40], truth[:40], "crack")


def test_threshold_in_metadata_round_trips_and_decides() -> None:
    threshold = DecisionThreshold("UD", 0.7, "test rule", {"recall": 0.9})
    metadata = ModelMetadata(
        labels=["CD", "UD"], input_height=8, input_width=8, resize_method="pillow-bilinear", backbone="b", weights="w",
        preprocessing="p", toolkit_version="t", trained_at="now", decision_threshold=threshold,
    )
    assert ModelMetadata.from_props(metadata.to_props(), "m.onnx").decision_threshold == threshold
    assert decide(np.array([0.35, 0.65]), ["CD", "UD"], threshold) == 0  # UD only from 0.7 on
    assert decide(np.array([0.25, 0.75]), ["CD", "UD"], threshold) == 1
    assert decide(np.array([0.35, 0.65]), ["CD", "UD"], None) == 1
    props = metadata.to_props() | {"labels": '["a", "b", "c"]'}
    with pytest.raises(ModelError, match="needs a two-class model"):
        ModelMetadata.from_props(props, "m.onnx")


@pytest.mark.slow
def test_augment_threshold_report_and_evaluate_model(small_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    model = tmp_path / "m.onnx"
    command = [
        sys.executable, "-m", "train", str(small_dataset), "--export", str(model), "--workspace", str(tmp_path / "cache"),
        "--weights", "none", "--image-size", "64", "--split", "50,25,25", "--augment", "2", "--positive", "CD", "--target-recall", "0.9",
    ]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["head"]["augmented_views"] == 2
    training_images = sum(report["images_used"]["train"].values())
    assert report["bottlenecks"]["augmented"] == {"computed": training_images, "reused": 0, "views_each": 2}  # both passes counted
    threshold = report["decision_threshold"]
    assert threshold["positive"] == "CD" and threshold["validation"]["recall"] >= 0.9 and "recall >= 0.9" in threshold["rule"]

    from runtime import Classifier

    classifier = Classifier(model)
    assert classifier.metadata.decision_threshold.threshold == pytest.approx(threshold["threshold"])
    predictions = classifier.predict_batch([small_dataset / row["file"] for row in report["test"]["predictions"]])
    assert [p.label for p in predictions] == [row["predicted"] for row in report["test"]["predictions"]]

    page = (tmp_path / "m.report.html").read_text(encoding="utf-8")
    for element in ('id="summary"', 'id="per-class"', 'id="misclassified"', "Training curves", "Confusion matrix", "ROC curve (CD positive)", "Precision-recall curve", "data:image/png;base64,"):
        assert element in page, element
    for plot in ("curves", "confusion", "roc", "pr"):
        assert (tmp_path / f"m.{plot}.png").read_bytes().startswith(b"\x89PNG")

    again = subprocess.run(command[:-2], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("found in cache, nothing computed") == 2  # symmetry view and augmented views alike

    evaluated = subprocess.run(
        [sys.executable, "-c", "import sys; from train.evaluate_cli import main; sys.argv[0] = 'evaluate-model'; main(); ", str(model), str(small_dataset)],
        capture_output=True, text=True,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((tmp_path / f"m.eval-{small_dataset.name}.report.json").read_text())
    assert result["images"] == 40 and set(result["per_class"]) == {"CD", "UD"}
    assert (tmp_path / f"m.eval-{small_dataset.name}.report.html").exists()


def test_evaluate_model_refuses_unknown_classes_in_one_line(color_model: Path, small_dataset: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from train.evaluate_cli import main; main()", str(color_model), str(small_dataset)],
        capture_output=True, text=True,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {small_dataset}: class(es) CD, UD are not among the model's labels ['blue', 'green', 'red']"


def _evaluate_model(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from train.evaluate_cli import main; main()", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("command", ["train.evaluate_cli", "train.edge_cli"])
def test_evaluate_model_and_quantize_model_never_import_tensorflow(command: str) -> None:
    """Both work on an exported file through the runtime and onnx tools; TensorFlow would add seconds of start-up."""
    code = f"import {command}, sys; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_evaluate_takes_float32_softmax_rows_without_a_warning() -> None:
    from train.evaluate import evaluate

    logits = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # float32: sums miss 1 by ~1e-7
    rows = softmax.astype(np.float64)  # as evaluate-model collects them from `Prediction.probabilities`
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = evaluate(rows, rows.argmax(axis=1), ["a", "b", "c"], [f"{i}.jpg" for i in range(200)])
    assert report["accuracy"] == 1.0 and report["log_loss"] > 0


def test_evaluate_model_report_that_cannot_be_written_stops_before_classifying(color_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "field"
    for label, rgb in {"red": (220, 30, 30), "blue": (20, 40, 210)}.items():
        (data / label).mkdir(parents=True)
        solid_image(data / label / f"{label}.jpg", rgb)
    done = _evaluate_model(color_model, data, "--report", color_model / "report")  # under a file
    assert done.returncode == 2 and "accuracy" not in done.stdout
    assert done.stderr.strip() == f"error: {color_model}/report.report.json: cannot write (File exists: {color_model})"
    for own in ("", ".int8"):  # the training report, a variant's report
        stem = color_model.with_name(color_model.stem + own)
        done = _evaluate_model(color_model, data, "--report", stem)
        assert done.returncode == 2 and "accuracy" not in done.stdout
        assert f"{stem} is the stem of the training or variant report of {color_model}; writing there would replace it" in unboxed(done.stderr)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a file system that takes any bytes as a name")
def test_evaluate_model_page_lists_unreadable_files_and_a_misclassified_one_whose_name_is_not_utf8(color_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "field"
    for label, rgb in {"red": (220, 30, 30), "blue": (20, 40, 210)}.items():
        (data / label).mkdir(parents=True)
        solid_image(data / label / f"{label}.jpg", rgb)
    solid_image(data / "red" / os.fsdecode(b"Br\xfccke.jpg"), (20, 40, 210))  # latin-1 name, a blue image labelled red
    (data / "blue" / "broken.jpg").write_bytes(b"")
    done = _evaluate_model(color_model, data, "--report", tmp_path / "out" / "field")
    assert done.returncode == 0, done.stderr[-2000:]
    page = (tmp_path / "out" / "field.report.html").read_text(encoding="utf-8")
    assert 'id="misclassified"' in page and "Br\\udcfccke.jpg" in page
    assert "<h2>Unreadable images, left out (1)</h2>" in page and f"<li>{data / 'blue' / 'broken.jpg'}: empty (0 bytes)" in page
    assert f"Misclassified images (1 of the folder {data})" in page and "test" not in page.replace(str(tmp_path), "")  # field data, no split


@pytest.mark.slow
def test_fine_tuning_trains_end_to_end_and_reports_both(small_dataset: Path, tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    model = tmp_path / "ft.onnx"
    done = subprocess.run(
        [
            sys.executable, "-m", "train", str(small_dataset), "--export", str(model), "--workspace", str(tmp_path / "cache"),
            "--weights", "none", "--image-size", "64", "--views", "2", "--split", "50,25,25",
            "--fine-tune-layers", "5", "--fine-tune-epochs", "2",
        ],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "ft.report.json").read_text())
    tuned = report["fine_tune"]
    assert tuned["layers"] == tuned["trained_layers"] == 5 and [row["epoch"] for row in tuned["curves"]] == [1, 2]
    losses = [row["val_loss"] for row in tuned["curves"]]
    assert tuned["kept_epoch"] == 0 or losses[tuned["kept_epoch"] - 1] == min(losses)
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(tuned["curves"][0])
    assert set(tuned["head_only"]) == set(tuned["fine_tuned"]) == {"accuracy", "balanced_accuracy"}
    assert tuned["fine_tuned"]["accuracy"] == round(report["test"]["accuracy"], 4)

    from runtime import Classifier

    predictions = Classifier(model).predict_batch([small_dataset / row["file"] for row in report["test"]["predictions"]])
    assert [p.label for p in predictions] == [row["predicted"] for row in report["test"]["predictions"]]  # the fine-tuned model was exported
    page = (tmp_path / "ft.report.html").read_text(encoding="utf-8")
    assert "Training curves" in page and ("fine-tuned (kept epoch" in page or "fine-tuned (no epoch kept: head only)" in page)
    assert f"<td>head only</td><td>{tuned['head_only']['accuracy']:.4f}</td>" in page


def test_fine_tuning_keeps_the_head_only_weights_when_no_epoch_lowers_the_validation_loss(assets_dir: Path) -> None:
    pytest.importorskip("tensorflow")
    from runtime.imaging import load_for_model
    from train.backbones import get_backbone
    from train.export import fuse
    from train.fine_tune import FineTuneConfig, fine_tune
    from train.head import build_head

    images = sorted((assets_dir / "CD").glob("*.jpg"))[:6] + sorted((assets_dir / "UD").glob("*.jpg"))[:6]
    pixels = np.stack([load_for_model(path, (32, 32)) for path in images])
    labels = np.array([0] * 6 + [1] * 6)
    extractor = get_backbone("mobilenet_v2", "none", (32, 32), seed=3).build_extractor()
    fused = fuse(extractor, build_head(extractor.output_shape[-1], 2))
    train, validation = (pixels[::2], labels[::2]), (pixels[1::2], labels[1::2])
    start = [weights.copy() for weights in fused.get_weights()]
    # A learning rate of 100 wrecks the model in one step: no epoch can beat the start on validation. More
    # layers than the backbone has train all of them, and the result says how many that was.
    wrecked = fine_tune(fused, extractor, train, validation, FineTuneConfig(layers=10_000, epochs=2, learning_rate=100.0))
    assert wrecked.kept_epoch == 0 and [row["epoch"] for row in wrecked.curves] == [1, 2]
    assert wrecked.trained_layers == 52  # MobileNetV2: 52 convolutions, plus no dense layer in the extractor
    for kept, original in zip(fused.get_weights(), start):
        np.testing.assert_array_equal(kept, original)
    # ImageNet weights at a workable rate, judged on the training images themselves: an epoch is kept, and
    # the model holds exactly that epoch's weights.
    pixels = np.stack([load_for_model(path, (64, 64)) for path in images])
    extractor = get_backbone("mobilenet_v2", "bundled", (64, 64)).build_extractor()
    fused = fuse(extractor, build_head(extractor.output_shape[-1], 2))
    tuned = fine_tune(fused, extractor, (pixels, labels), (pixels, labels), FineTuneConfig(layers=3, epochs=3, learning_rate=1e-4))
    losses = [row["val_loss"] for row in tuned.curves]
    assert tuned.kept_epoch >= 1 and losses[tuned.kept_epoch - 1] == min(losses) and tuned.trained_layers == 3
    assert fused.evaluate(pixels, labels, verbose=0)[0] == pytest.approx(losses[tuned.kept_epoch - 1], rel=1e-5)


def test_threshold_edge_cases_an_unreachable_recall_and_nan() -> None:
    truth = np.array([True, False, True])
    strict = choose_threshold(np.array([0.1, 0.2, 0.9]), truth, "crack", target_recall=1.0)
    assert strict.validation["recall"] == 1.0 and strict.threshold <= 0.1
    with pytest.raises(ValueError, match="finite"):
        choose_threshold(np.array([0.1, np.nan, 0.9]), truth, "crack")
    with pytest.raises(ValueError, match="not a probability"):
        DecisionThreshold.from_json('{"positive": "a", "threshold": NaN}')


def test_report_draws_class_names_with_dollar_signs_as_text(assets_dir: Path, tmp_path: Path) -> None:
    """Class names are folder names, not TeX: `cost$^$` would make matplotlib's mathtext raise."""
    pytest.importorskip("matplotlib")
    from train.evaluate import evaluate
    from train.html_report import write_html_report

    labels = ["cost$^$", "$5 plain"]
    files = [f"CD/{path.name}" for path in sorted((assets_dir / "CD").glob("*.jpg"))[:4]]
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    evaluation = evaluate(probabilities, np.array([0, 0, 1, 1]), labels, files)
    page, *plots = write_html_report(evaluation, tmp_path / "model", assets_dir, "names", positive=labels[1])
    assert "cost$^$" in page.read_text(encoding="utf-8") and len(plots) == 3 and all(plot.stat().st_size for plot in plots)


def test_evaluate_model_rerun_on_one_class_leaves_no_stale_plots_and_no_warning(threshold_model: Path, tmp_path: Path) -> None:
    """Field data may hold one class; ROC/PR then cannot be drawn, and an earlier run's curves must not stay."""
    stem = tmp_path / "out" / "site"
    both, red_only = tmp_path / "both", tmp_path / "red_only"
    for folder, colours in ((both, {"red": (220, 30, 30), "blue": (20, 40, 210)}), (red_only, {"red": (220, 30, 30)})):
        for label, rgb in colours.items():
            (folder / label).mkdir(parents=True)
            for index in range(3):
                solid_image(folder / label / f"{label}{index}.jpg", rgb)
    assert _evaluate_model(threshold_model, both, "--report", stem).returncode == 0
    assert Path(f"{stem}.roc.png").is_file() and Path(f"{stem}.pr.png").is_file()
    again = _evaluate_model(threshold_model, red_only, "--report", stem)
    assert again.returncode == 0 and "Warning" not in again.stderr, again.stderr
    assert not Path(f"{stem}.roc.png").exists() and not Path(f"{stem}.pr.png").exists()
    assert Path(f"{stem}.confusion.png").is_file() and json.loads(Path(f"{stem}.report.json").read_text())["images"] == 3


def test_evaluate_model_checks_every_report_file_before_classifying(color_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "field"
    (data / "red").mkdir(parents=True)
    solid_image(data / "red" / "red.jpg", (220, 30, 30))
    stem = tmp_path / "report"
    Path(f"{stem}.roc.png").mkdir()  # a folder where a plot goes
    done = _evaluate_model(color_model, data, "--report", stem)
    assert done.returncode == 2 and "accuracy" not in done.stdout
    assert done.stderr.strip() == f"error: {stem}.roc.png: cannot write (a folder of that name is in the way)"
