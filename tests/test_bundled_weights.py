"""The bundled offline backbones are genuinely ImageNet-trained and match their torch sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
skimage_data = pytest.importorskip("skimage.data")

from runtime.imaging import resize_image  # noqa: E402
from train.backbones import MODELS_DIR, REGISTRY, BackboneError, get_backbone  # noqa: E402
from train.variants import torch_style_mobilenet_v2  # noqa: E402

REFERENCE = MODELS_DIR / "reference_features.npz"
#: ImageNet classes: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup.
EXPECTED_CLASSES = {"chelsea": {281, 282, 285}, "coffee": {504, 967, 968}}

pytestmark = pytest.mark.skipif(not REFERENCE.exists(), reason="bundled weights not present")


def photo(name: str, size: int) -> np.ndarray:
    return resize_image(getattr(skimage_data, name)(), (size, size))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_default_weights_are_bundled_for_the_offline_backbones() -> None:
    assert get_backbone("mobilenet_v2").weights == "bundled"
    assert get_backbone("inception_v3").weights == "bundled"
    assert get_backbone("resnet_v2_101").weights == "imagenet"
    with pytest.raises(BackboneError, match="no bundled weights"):
        get_backbone("resnet_v2_50", "bundled")


def test_missing_bundled_weights_are_named_not_swapped_for_a_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An install without models/ (a plain wheel) must not quietly train on Keras' other network."""
    monkeypatch.setattr("train.backbones.MODELS_DIR", tmp_path)
    with pytest.raises(BackboneError, match=r"mobilenet_v2_imagenet.weights.h5: bundled mobilenet_v2 weights not found; .*pip install -e"):
        get_backbone("mobilenet_v2")


def test_mobilenet_v2_classifies_real_photos_through_its_imagenet_head() -> None:
    preprocessing = get_backbone("mobilenet_v2").preprocessing
    model = torch_style_mobilenet_v2((224, 224, 3), include_top=True)
    model.load_weights(REGISTRY["mobilenet_v2"].bundled.path)
    reference = np.load(REFERENCE)
    for name, classes in EXPECTED_CLASSES.items():
        pixels = photo(name, 224).astype(np.float32) * np.array(preprocessing.scale) + np.array(preprocessing.offset)
        probabilities = np.asarray(model(pixels[None].astype(np.float32)))[0]
        assert int(probabilities.argmax()) in classes, name
        np.testing.assert_allclose(probabilities, reference[f"mobilenet_v2_{name}_probabilities"], atol=1e-4)


def test_inception_v3_extractor_matches_the_torch_source() -> None:
    extractor = get_backbone("inception_v3").build_extractor()  # uint8 in, normalisation inside
    reference = np.load(REFERENCE)
    for name in EXPECTED_CLASSES:
        features = np.asarray(extractor(photo(name, 299)[None]))[0]
        assert cosine(features, reference[f"inception_v3_fid_{name}"]) >= 0.9999, name


def test_mobilenet_v2_trunk_matches_the_torch_source() -> None:
    backbone = get_backbone("mobilenet_v2")
    trunk = torch_style_mobilenet_v2((224, 224, 3), pooling="avg")  # the torch reference is average-pooled
    trunk.load_weights(backbone.spec.bundled.path)
    scale, offset = np.array(backbone.preprocessing.scale), np.array(backbone.preprocessing.offset)
    reference = np.load(REFERENCE)
    for name in EXPECTED_CLASSES:
        features = np.asarray(trunk((photo(name, 224) * scale + offset)[None].astype(np.float32)))[0]
        assert cosine(features, reference[f"mobilenet_v2_{name}"]) >= 0.9999, name
