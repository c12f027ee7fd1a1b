"""train.head, train.evaluate and train.export with real Keras models and real onnxruntime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import onnx  # noqa: E402

from runtime import Classifier  # noqa: E402
from runtime.imaging import load_for_model  # noqa: E402
from runtime.metadata import ModelMetadata  # noqa: E402
from train.backbones import get_backbone  # noqa: E402
from train.evaluate import evaluate  # noqa: E402
from train.export import ExportError, export_onnx, fuse  # noqa: E402
from train.head import CHUNK_ROWS, MIN_RELATIVE_STD, HeadConfig, build_head, predict_views, standardised_rows, train_head  # noqa: E402


def blobs(n: int, seed: int, views: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy clusters in 16 dimensions, as (n, views, 16) features with labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.eye(3, 16) * 4
    features = centres[labels][:, None, :] + rng.normal(size=(n, views, 16))
    return features.astype(np.float32), labels


def test_head_learns_separable_features_and_prints_phase_lines() -> None:
    lines: list[str] = []
    result = train_head(blobs(300, 0, views=2), blobs(60, 1, views=2), 3, HeadConfig(), report=lines.append)
    test_x, test_y = blobs(100, 2, views=2)
    report = evaluate(predict_views(result.model, test_x), test_y, ["a", "b", "c"], [f"{i}.jpg" for i in range(100)])
    assert report["accuracy"] > 0.95
    assert lines[0].startswith("Phase: Training, Dataset used: Training, C: 0.0003, Accuracy: ")
    assert any("Dataset used: Validation" in line and "Cross-Entropy: " in line for line in lines)
    assert result.c in HeadConfig().c_values and len(result.candidates) == len(HeadConfig().c_values)
    best = min(result.candidates, key=lambda scores: scores["val_loss"])
    assert best["c"] == result.c


def test_head_fit_is_deterministic_and_matches_its_keras_model() -> None:
    first, second = (train_head(blobs(200, 3), blobs(40, 4), 3, HeadConfig(), report=lambda line: None) for _ in range(2))
    test_x, _ = blobs(50, 5)
    np.testing.assert_array_equal(predict_views(first.model, test_x), predict_views(second.model, test_x))
    binary_x, binary_y = blobs(200, 6)
    keep = binary_y < 2  # two classes present out of three: the absent class gets ~0 probability
    binary = train_head((binary_x[keep], binary_y[keep]), None, 3, HeadConfig(), report=lambda line: None)
    probabilities = predict_views(binary.model, binary_x[keep])
    assert probabilities[:, 2].max() < 1e-6 and (probabilities.argmax(axis=1) == binary_y[keep]).mean() > 0.95


def test_a_feature_constant_in_training_stays_out_of_the_head() -> None:
    """A channel dead on the training images (zero, as many are at small input sizes) that later wakes, in
    fine-tuning or on an unusual image, must not swing the prediction."""
    (train_x, train_y), (val_x, val_y) = blobs(200, 9), blobs(40, 10)
    train_x[..., 5] = val_x[..., 5] = 0.0
    train_x[..., 6] = 0.0
    train_x[0, 0, 6] = 0.01  # nearly dead: active on one image, barely
    head = train_head((train_x, train_y), (val_x, val_y), 3, HeadConfig(), report=lambda line: None).model
    test_x, _ = blobs(50, 11)
    woken = test_x.copy()
    woken[..., 5] = 3.0
    np.testing.assert_allclose(predict_views(head, woken), predict_views(head, test_x), atol=1e-6)
    scale = np.asarray(head.get_layer("standardise").scale)
    typical = np.median(train_x.reshape(-1, 16).std(axis=0)[np.arange(16) != 5])
    assert scale[5] == 0 and scale[6] == pytest.approx(1 / (MIN_RELATIVE_STD * typical), rel=1e-4)  # not 1 / 7e-4


def test_standardising_many_rows_needs_no_float64_copy_of_them() -> None:
    """The head standardises in float64 a chunk at a time: the same float32 rows as one whole-array float64
    computation, with working memory far below a float64 copy of the features (numpy reports its
    allocations to tracemalloc)."""
    import tracemalloc

    rows = np.random.default_rng(0).gamma(2.0, 0.5, size=(10 * CHUNK_ROWS + 17, 128)).astype(np.float32)
    mean, std = rows.mean(axis=0, dtype=np.float64), rows.std(axis=0, dtype=np.float64)
    tracemalloc.start()
    standardised = standardised_rows(rows, mean, std)
    extra = tracemalloc.get_traced_memory()[1] - standardised.nbytes
    tracemalloc.stop()
    np.testing.assert_array_equal(standardised, ((rows - mean) / std).astype(np.float32))
    assert extra <= 2 * CHUNK_ROWS * rows.shape[1] * 8 + (1 << 20)  # a float64 chunk and its quotient (8 MB); whole-array: 63 MB


def test_a_head_that_stops_before_converging_says_so_in_one_line() -> None:
    lines: list[str] = []
    train_head(blobs(200, 7), blobs(40, 8), 3, HeadConfig(c_values=(10.0,), max_iterations=2), report=lines.append)
    assert "note: C: 10: L-BFGS stopped after 2 iterations before converging" in lines
    lines.clear()
    train_head(blobs(200, 7), blobs(40, 8), 3, HeadConfig(c_values=(10.0,)), report=lines.append)
    assert not any(line.startswith("note:") for line in lines)


def test_evaluate_reports_every_metric() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    report = evaluate(probabilities, np.array([0, 1, 1, 1]), ["CD", "UD"], ["a", "b", "c", "d"])
    assert report["accuracy"] == 0.75
    assert report["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert report["confusion_matrix"]["rows_actual_columns_predicted"] == [[1, 0], [1, 2]]
    assert report["misclassified"] == [{"file": "c", "actual": "UD", "predicted": "CD", "score": 0.6}]
    assert report["per_class"]["UD"]["recall"] == pytest.approx(2 / 3)
    assert report["log_loss"] > 0


@pytest.fixture(scope="module")
def small_classifier():
    backbone = get_backbone("mobilenet_v2", "none", (64, 64), seed=0)
    extractor = backbone.build_extractor()
    head = build_head(backbone.spec.feature_dim, 2)
    return backbone, fuse(extractor, head)


def metadata_for(backbone) -> ModelMetadata:
    return ModelMetadata(
        labels=["CD", "UD"], input_height=64, input_width=64, resize_method="pillow-bilinear",
        backbone=backbone.spec.name, weights=backbone.weights_identity, preprocessing=backbone.spec.preprocessing.name,
        toolkit_version="test", trained_at="2026-01-01T00:00:00+00:00", test_metrics={"accuracy": 0.5},
    )


def real_pixels(assets_dir: Path, size: int) -> np.ndarray:
    paths = sorted((assets_dir / "CD").glob("*.jpg"))[:3] + sorted((assets_dir / "UD").glob("*.jpg"))[:3]
    return np.stack([load_for_model(path, (size, size)) for path in paths])


def test_export_writes_one_checked_model_with_metadata(small_classifier, assets_dir: Path, tmp_path: Path) -> None:
    backbone, model = small_classifier
    pixels = real_pixels(assets_dir, 64)
    result = export_onnx(model, metadata_for(backbone), tmp_path / "m.onnx", pixels)
    assert result.max_abs_difference <= 1e-4 and result.parity_images == 6
    proto = onnx.load(result.path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    assert [i.name for i in proto.graph.input] == ["image"]
    assert {o.name for o in proto.graph.output} == {"probabilities", "label_index"}
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["labels"] == '["CD", "UD"]' and props["backbone"] == "mobilenet_v2"
    classifier = Classifier(result.path)
    onnx_probabilities = [list(p.probabilities.values()) for p in classifier.predict_pixels(np.concatenate([pixels] * 6))]
    assert len(onnx_probabilities) == 36  # dynamic batch dimension
    np.testing.assert_allclose(onnx_probabilities[:6], np.asarray(model(pixels)), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_failed_parity_writes_nothing(small_classifier, assets_dir: Path, tmp_path: Path) -> None:
    backbone, model = small_classifier
    with pytest.raises(ExportError, match="not written"):
        export_onnx(model, metadata_for(backbone), tmp_path / "m.onnx", real_pixels(assets_dir, 64), tolerance=-1.0)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "m.onnx").write_bytes(b"the previous model")  # a failed re-export leaves it as it was
    with pytest.raises(ExportError, match="not written"):
        export_onnx(model, metadata_for(backbone), tmp_path / "m.onnx", real_pixels(assets_dir, 64), tolerance=-1.0)
    assert [path.name for path in tmp_path.iterdir()] == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"the previous model"
