"""The backbone registry: name -> Keras builder, input size, preprocessing and weight sources.

Every consumer (bottleneck cache, export, metadata) reads the chosen `Backbone` rather than hard-coding
sizes or normalisation. The feature extractor takes uint8 RGB NHWC and does its own normalisation, so
the exported ONNX graph carries it and the runtime never needs to know which backbone it runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras

from runtime.errors import first_line, RetrainOnnxError
from runtime.imaging import RESIZE_METHOD

#: Weight sources that are not a file path.
RANDOM_WEIGHTS = "none"
IMAGENET_WEIGHTS = "imagenet"


class BackboneError(RetrainOnnxError):
    """A backbone or its weights cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Preprocessing:
    """Pixel normalisation inside the graph: float = uint8 * scale + offset, per RGB channel."""

    name: str
    scale: tuple[float, float, float]
    offset: tuple[float, float, float]


#: Keras applications' "tf" mode: pixels scaled to [-1, 1].
SCALE_MINUS_ONE_TO_ONE = Preprocessing("x/127.5-1", (1 / 127.5,) * 3, (-1.0,) * 3)


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build one architecture and what it expects."""

    name: str
    builder: Callable[..., keras.Model]
    input_size: tuple[int, int]
    feature_dim: int
    preprocessing: Preprocessing


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet_v2_101", keras.applications.ResNet101V2, (224, 224), 2048, SCALE_MINUS_ONE_TO_ONE),
        BackboneSpec("resnet_v2_50", keras.applications.ResNet50V2, (224, 224), 2048, SCALE_MINUS_ONE_TO_ONE),
        BackboneSpec("inception_v3", keras.applications.InceptionV3, (299, 299), 2048, SCALE_MINUS_ONE_TO_ONE),
        BackboneSpec("mobilenet_v2", keras.applications.MobileNetV2, (224, 224), 1280, SCALE_MINUS_ONE_TO_ONE),
    )
}


@dataclass(frozen=True)
class Backbone:
    """A registry entry with its weights and input size chosen: everything that determines features."""

    spec: BackboneSpec
    weights: str
    input_size: tuple[int, int]
    seed: int

    @property
    def weights_identity(self) -> str:
        """What makes these weights unique: the seed for random ones, the content hash for a file."""
        if self.weights == RANDOM_WEIGHTS:
            return f"random(seed={self.seed})"
        if self.weights == IMAGENET_WEIGHTS:
            return "keras-imagenet"
        return f"file:sha256={_file_sha256(Path(self.weights))}"

    def describe(self) -> dict[str, object]:
        """The fields that determine the features, as a JSON-ready dict."""
        return {
            "arch": self.spec.name,
            "weights": self.weights_identity,
            "input_size": list(self.input_size),
            "preprocessing": self.spec.preprocessing.name,
            "resize": RESIZE_METHOD,
        }

    def fingerprint(self) -> str:
        """A short hash of `describe()`: bottleneck features are cached under it."""
        text = json.dumps(self.describe(), sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def build_extractor(self) -> keras.Model:
        """A Keras model: uint8 RGB (N, H, W, 3) -> pooled features (N, feature_dim)."""
        height, width = self.input_size
        if self.weights == RANDOM_WEIGHTS:
            keras.utils.set_random_seed(self.seed)
        trunk = self._build_trunk((height, width, 3))
        image = keras.Input((height, width, 3), dtype="uint8", name="image")
        pixels = keras.layers.Rescaling(
            scale=list(self.spec.preprocessing.scale), offset=list(self.spec.preprocessing.offset), name="normalise"
        )(image)
        return keras.Model(image, trunk(pixels), name=f"{self.spec.name}_features")

    def _build_trunk(self, shape: tuple[int, int, int]) -> keras.Model:
        weights = None if self.weights == RANDOM_WEIGHTS else self.weights
        try:
            return self.spec.builder(include_top=False, weights=weights, input_shape=shape, pooling="avg")
        except Exception as error:  # Keras raises plain Exception/ValueError/URL errors here
            if self.weights == IMAGENET_WEIGHTS:
                raise BackboneError(
                    f"{self.spec.name}: cannot get Keras ImageNet weights ({first_line(error)}); "
                    "without internet pass --weights FILE or --weights none"
                ) from error
            raise BackboneError(f"{self.weights}: cannot load as {self.spec.name} weights ({first_line(error)})") from error


def get_backbone(
    name: str, weights: str = IMAGENET_WEIGHTS, input_size: tuple[int, int] | None = None, seed: int = 0
) -> Backbone:
    """Look up `name` in the registry and bind weights ("imagenet", "none" or a file) and input size."""
    if name not in REGISTRY:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}")
    if weights not in (RANDOM_WEIGHTS, IMAGENET_WEIGHTS) and not Path(weights).is_file():
        raise BackboneError(f"{weights}: weights file not found (use imagenet, none, or a path to a weights file)")
    spec = REGISTRY[name]
    return Backbone(spec=spec, weights=weights, input_size=input_size or spec.input_size, seed=seed)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
