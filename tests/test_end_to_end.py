"""End to end: train-model on the bundled sample, export, reload in the runtime, classify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from runtime import Classifier  # noqa: E402
from runtime.imaging import load_for_model  # noqa: E402

pytestmark = pytest.mark.slow


def train(data: Path, workspace: Path, model: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `train-model` as a user would; defaults: MobileNetV2 with its bundled ImageNet weights."""
    command = [sys.executable, "-m", "train", str(data), "--export", str(model), "--workspace", str(workspace), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env)


def test_train_export_classify_on_the_bundled_sample(assets_dir: Path, tmp_path: Path) -> None:
    model = tmp_path / "crack.onnx"
    first = train(assets_dir, tmp_path / "cache", model)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Phase: Training, Dataset used: Validation, C: 0.0003, Accuracy:" in first.stdout
    assert "Classifying single image" in first.stdout and "Actual Value: " in first.stdout
    report = json.loads((tmp_path / "crack.report.json").read_text())
    assert report["metadata"]["weights"].startswith("bundled:mobilenet_v2_imagenet.weights.h5")
    assert report["test"]["balanced_accuracy"] >= 0.8  # real transfer learning, not chance
    assert report["bottlenecks"] == {**report["bottlenecks"], "computed": 400, "reused": 0}
    test = report["test"]
    assert test["images"] == sum(report["split_counts"]["test"].values()) > 30
    for key in ("accuracy", "balanced_accuracy", "log_loss", "per_class", "confusion_matrix", "misclassified"):
        assert key in test
    assert report["export"]["max_abs_difference"] <= 1e-4

    classifier = Classifier(model)
    assert classifier.labels == ["CD", "UD"] and classifier.input_size == (224, 224)
    assert classifier.metadata.views == 8  # the default: trained on and averaging over 8 symmetry views
    pixels = np.stack([load_for_model(assets_dir / row["file"], (224, 224)) for row in test["predictions"][:4]])
    upright, turned = (classifier.predict_pixels(batch) for batch in (pixels, np.rot90(pixels, 1, axes=(1, 2)).copy()))
    for a, b in zip(upright, turned):  # a crack photo turned by 90 degrees gets the same answer
        assert a.label == b.label and abs(a.probabilities["CD"] - b.probabilities["CD"]) < 1e-4
    assert classifier.metadata.test_metrics["accuracy"] == test["accuracy"]
    expected = test["predictions"]
    predictions = classifier.predict_batch([assets_dir / row["file"] for row in expected], batch_size=16)
    assert [p.label for p in predictions] == [row["predicted"] for row in expected]
    np.testing.assert_allclose(
        [[p.probabilities[label] for label in classifier.labels] for p in predictions],
        [row["probabilities"] for row in expected],
        atol=1e-4,
    )

    cli = subprocess.run([sys.executable, "-m", "runtime", str(model), str(assets_dir / expected[0]["file"])], capture_output=True, text=True)
    assert cli.returncode == 0 and cli.stdout.startswith(f"Image: {Path(expected[0]['file']).name} | Predicted: ")

    second = train(assets_dir, tmp_path / "cache", tmp_path / "again.onnx")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "all 400 found in cache, nothing computed" in second.stdout
    again = json.loads((tmp_path / "again.report.json").read_text())
    assert again["bottlenecks"]["computed"] == 0 and again["test"]["accuracy"] == test["accuracy"]


def test_unreadable_images_are_listed_and_skipped(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "CD" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (small_dataset / "UD" / "empty.png").write_bytes(b"")
    first_cd = sorted((small_dataset / "CD").glob("7*.jpg"))[0]
    (small_dataset / "UD" / "misfiled copy.jpg").write_bytes(first_cd.read_bytes())
    done = train(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--weights", "none", "--image-size", "64", "--split", "50,25,25")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broken.jpg" in done.stdout and "empty.png" in done.stdout
    assert "random weights (--weights none) give features that barely differ between images" in " ".join(done.stdout.split())
    assert f"the same image is filed under several classes: CD/{first_cd.name} = UD/misfiled copy.jpg" in done.stdout
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert len(report["skipped_images"]) == 2
    assert report["duplicates_across_classes"] == [[f"CD/{first_cd.name}", "UD/misfiled copy.jpg"]]
    assert report["bottlenecks"]["computed"] == 40  # the copy has the same bytes: its features are computed once


def test_bad_data_folder_exits_2_with_one_line(tmp_path: Path) -> None:
    done = train(tmp_path / "missing", tmp_path / "cache", tmp_path / "m.onnx")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: ") and "missing" in done.stderr


def test_export_path_that_cannot_be_written_stops_before_training(small_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outputs = tmp_path_factory.mktemp("outputs")  # outside the data folder (`small_dataset` is a tmp_path)
    (outputs / "a file").write_text("not a folder")
    done = train(small_dataset, outputs / "cache", outputs / "a file" / "m.onnx")
    assert done.returncode == 2 and not (outputs / "cache").exists()
    assert done.stderr.strip() == f"error: {outputs / 'a file' / 'm.onnx'}: cannot write (File exists: {outputs / 'a file'})"


def test_keras_imagenet_download_failure_names_the_offline_backbones(small_dataset: Path, tmp_path: Path) -> None:
    # No internet, made certain without touching the code: every HTTP(S) request goes to a closed local
    # port, and an empty KERAS_HOME holds no previously downloaded weights.
    offline = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "KERAS_HOME": str(tmp_path / "keras")}
    done = train(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--arch", "resnet_v2_50", "--weights", "imagenet", env=offline)
    assert done.returncode == 2 and not (tmp_path / "m.onnx").exists()
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: resnet_v2_50: cannot download Keras ImageNet weights")
    assert "--arch inception_v3 or --arch mobilenet_v2 (bundled weights)" in error
