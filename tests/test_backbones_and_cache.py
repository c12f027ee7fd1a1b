"""train.backbones and train.cache with real Keras models and real features."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import PIL
import pytest

pytest.importorskip("tensorflow")

from train.backbones import REGISTRY, BackboneError, get_backbone  # noqa: E402
from train.cache import BottleneckCache  # noqa: E402
from train.extractor import EXTRACTOR_FILE, onnx_extractor  # noqa: E402


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_backbone_builds_a_uint8_feature_extractor(name: str) -> None:
    size = 75 if name == "inception_v3" else 32
    backbone = get_backbone(name, "none", (size, size))
    extractor = backbone.build_extractor()
    pixels = np.random.default_rng(0).integers(0, 255, (2, size, size, 3), dtype=np.uint8)
    features = np.asarray(extractor(pixels))
    assert features.shape == (2, REGISTRY[name].feature_dim)
    assert np.isfinite(features).all()


def test_random_weights_are_reproducible_by_seed() -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    first = np.asarray(get_backbone("mobilenet_v2", "none", (32, 32), seed=5).build_extractor()(pixels))
    again = np.asarray(get_backbone("mobilenet_v2", "none", (32, 32), seed=5).build_extractor()(pixels))
    np.testing.assert_array_equal(first, again)


def test_fingerprint_changes_with_what_changes_features(tmp_path: Path) -> None:
    base = get_backbone("mobilenet_v2", "none", (32, 32), seed=0)
    assert base.fingerprint() == get_backbone("mobilenet_v2", "none", (32, 32), seed=0).fingerprint()
    assert base.fingerprint() != get_backbone("mobilenet_v2", "none", (64, 64), seed=0).fingerprint()
    assert base.fingerprint() != get_backbone("mobilenet_v2", "none", (32, 32), seed=1).fingerprint()
    assert base.fingerprint() != get_backbone("resnet_v2_50", "none", (32, 32), seed=0).fingerprint()
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"pretend weights")
    assert get_backbone("mobilenet_v2", str(weights)).weights_identity.startswith("file:sha256=")


def test_registry_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="choose one of"):
        get_backbone("vgg99")
    with pytest.raises(BackboneError, match="weights file not found"):
        get_backbone("mobilenet_v2", str(tmp_path / "absent.h5"))
    broken = tmp_path / "broken.weights.h5"
    broken.write_bytes(b"not hdf5")
    with pytest.raises(BackboneError, match="cannot load"):
        get_backbone("mobilenet_v2", str(broken), (32, 32)).build_extractor()


def test_cache_round_trip_and_damaged_entries(tmp_path: Path) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (32, 32))
    cache = BottleneckCache(tmp_path, backbone)
    features = np.arange(1280, dtype=np.float32)
    key = "ab" * 32
    assert cache.get(key) is None
    cache.put(key, features)
    np.testing.assert_array_equal(cache.get(key), features)
    assert (cache.directory / "backbone.json").exists()
    assert not list(cache.directory.rglob("*.tmp"))
    cache.path_for(key).write_bytes(b"garbage")
    assert cache.get(key) is None
    assert not cache.path_for(key).exists()
    cache.put(key, np.zeros(7, dtype=np.float32))  # wrong length, e.g. from another backbone
    assert cache.get(key) is None


def test_cache_checksum_catches_a_flipped_bit(tmp_path: Path) -> None:
    """A damaged entry that still parses as a finite vector is caught by its checksum and removed."""
    cache = BottleneckCache(tmp_path, get_backbone("mobilenet_v2", "none", (32, 32)))
    key = "cd" * 32
    cache.put(key, np.ones(1280, dtype=np.float32))
    entry = bytearray(cache.path_for(key).read_bytes())
    entry[len(entry) // 2] ^= 0x01  # inside the float data: 1.0 becomes another finite number
    cache.path_for(key).write_bytes(bytes(entry))
    assert cache.get(key) is None
    assert not cache.path_for(key).exists()
    cache.put(key, np.ones(1280, dtype=np.float32))
    np.testing.assert_array_equal(cache.get(key), np.ones(1280, dtype=np.float32))


def test_unreadable_notes_and_left_over_temporary_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (32, 32))
    cache = BottleneckCache(tmp_path, backbone)
    key = "ef" * 32
    assert cache.unreadable(key) is None
    cache.note_unreadable(key, "not an image file (unknown format)")
    assert cache.unreadable(key) == "not an image file (unknown format)"
    monkeypatch.setattr(PIL, "__version__", "0.0-other")  # a Pillow upgrade may read the file: try again
    assert cache.unreadable(key) is None
    old, fresh = cache.directory / "ef" / f".{key}.features.x.tmp", cache.directory / "ef" / f".{key}.y.features.z.tmp"
    old.write_bytes(b"")
    fresh.write_bytes(b"")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    BottleneckCache(tmp_path, backbone)  # a killed run left `old` behind; `fresh` may be another run's write in progress
    assert not old.exists() and fresh.exists()


def test_a_damaged_extractor_file_is_converted_again(tmp_path: Path) -> None:
    extractor = get_backbone("mobilenet_v2", "none", (32, 32)).build_extractor()
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    expected = onnx_extractor(extractor, tmp_path)(pixels)
    path = tmp_path / EXTRACTOR_FILE
    path.write_bytes(path.read_bytes()[:1000])  # e.g. a copy cut short
    np.testing.assert_allclose(onnx_extractor(extractor, tmp_path)(pixels), expected, rtol=1e-6)
    assert path.stat().st_size > 1000
