"""The backbone registry: name -> Keras builder, input size, preprocessing and weight sources.

Every consumer (bottleneck cache, export, metadata) reads the chosen `Backbone` rather than hard-coding
sizes or normalisation. The feature extractor takes uint8 RGB NHWC and does its own normalisation, so
the exported ONNX graph carries it and the runtime never needs to know which backbone it runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import keras

from runtime.errors import first_line, RetrainOnnxError
from runtime.imaging import RESIZE_METHOD
from train.variants import fid_inception_v3, torch_style_mobilenet_v2

#: Weight sources that are not a file path.
RANDOM_WEIGHTS = "none"
IMAGENET_WEIGHTS = "imagenet"
BUNDLED_WEIGHTS = "bundled"

#: Where bundled weights live: the repository's models/ folder.
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


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
#: The FID Inception-v3 network's input scaling.
SCALE_FID = Preprocessing("(x-128)/128", (1 / 128,) * 3, (-1.0,) * 3)
#: torchvision's ImageNet normalisation: (x/255 - mean) / std.
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION_IMAGENET = Preprocessing(
    "(x/255-mean)/std torchvision",
    tuple(1 / (255 * std) for std in _STD),
    tuple(-mean / std for mean, std in zip(_MEAN, _STD)),
)


@dataclass(frozen=True)
class BundledWeights:
    """Offline ImageNet weights shipped in models/, with the architecture variant and preprocessing they need."""

    file: str
    builder: Callable[..., keras.Model]
    preprocessing: Preprocessing

    @property
    def path(self) -> Path:
        """Location of the weights file."""
        return MODELS_DIR / self.file


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build one architecture and what it expects."""

    name: str
    builder: Callable[..., keras.Model]
    input_size: tuple[int, int]
    feature_dim: int
    preprocessing: Preprocessing
    bundled: BundledWeights | None = None
    pooling: str = "avg"

    @property
    def default_weights(self) -> str:
        """"bundled" for the backbones with weights in models/, else "imagenet". Never a silent switch to
        "imagenet" when the bundled file is missing: that is another network with other preprocessing."""
        return BUNDLED_WEIGHTS if self.bundled else IMAGENET_WEIGHTS


REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet_v2_101", keras.applications.ResNet101V2, (224, 224), 2048, SCALE_MINUS_ONE_TO_ONE),
        BackboneSpec("resnet_v2_50", keras.applications.ResNet50V2, (224, 224), 2048, SCALE_MINUS_ONE_TO_ONE),
        BackboneSpec(
            "inception_v3", keras.applications.InceptionV3, (299, 299), 2048, SCALE_MINUS_ONE_TO_ONE,
            BundledWeights("inception_v3_fid.weights.h5", fid_inception_v3, SCALE_FID),
        ),
        # Global max pooling: a thin crack is a local feature that averaging over the image dilutes
        # (measured on assets/: mean test balanced accuracy 0.90 with max vs 0.86 with average pooling).
        BackboneSpec(
            "mobilenet_v2", keras.applications.MobileNetV2, (224, 224), 1280, SCALE_MINUS_ONE_TO_ONE,
            BundledWeights("mobilenet_v2_imagenet.weights.h5", torch_style_mobilenet_v2, TORCHVISION_IMAGENET),
            pooling="max",
        ),
    )
}
OFFLINE_BACKBONES = [name for name, spec in REGISTRY.items() if spec.bundled]
#: The backbone `train-model` uses without --arch (see README: chosen from measured accuracy and speed).
DEFAULT_ARCH = "mobilenet_v2"


@dataclass(frozen=True)
class Backbone:
    """A registry entry with its weights and input size chosen: everything that determines features."""

    spec: BackboneSpec
    weights: str
    input_size: tuple[int, int]
    seed: int

    @property
    def preprocessing(self) -> Preprocessing:
        """The normalisation these weights expect."""
        if self.weights == BUNDLED_WEIGHTS:
            return self.spec.bundled.preprocessing
        return self.spec.preprocessing

    @cached_property
    def weights_identity(self) -> str:
        """What makes these weights unique: the seed for random ones, the content hash for a file."""
        if self.weights == RANDOM_WEIGHTS:
            return f"random(seed={self.seed})"
        if self.weights == IMAGENET_WEIGHTS:
            return "keras-imagenet"
        if self.weights == BUNDLED_WEIGHTS:
            return f"bundled:{self.spec.bundled.file}:sha256={_file_sha256(self.spec.bundled.path)[:16]}"
        return f"file:sha256={_file_sha256(Path(self.weights))}"

    def describe(self) -> dict[str, object]:
        """The fields that determine the features, as a JSON-ready dict."""
        return {
            "arch": self.spec.name,
            "weights": self.weights_identity,
            "input_size": list(self.input_size),
            "preprocessing": self.preprocessing.name,
            "pooling": self.spec.pooling,
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
            scale=list(self.preprocessing.scale), offset=list(self.preprocessing.offset), name="normalise"
        )(image)
        return keras.Model(image, trunk(pixels), name=f"{self.spec.name}_features")

    def _build_trunk(self, shape: tuple[int, int, int]) -> keras.Model:
        try:
            if self.weights == BUNDLED_WEIGHTS:
                trunk = self.spec.bundled.builder(shape, pooling=self.spec.pooling)
                trunk.load_weights(self.spec.bundled.path)
                return trunk
            weights = None if self.weights == RANDOM_WEIGHTS else self.weights
            return self.spec.builder(include_top=False, weights=weights, input_shape=shape, pooling=self.spec.pooling)
        except Exception as error:  # Keras raises plain Exception/ValueError/URL errors here
            if self.weights == IMAGENET_WEIGHTS:
                raise BackboneError(
                    f"{self.spec.name}: cannot download Keras ImageNet weights ({first_line(error)}); offline, use "
                    f"--arch {' or --arch '.join(OFFLINE_BACKBONES)} (bundled weights), --weights FILE or --weights none"
                ) from error
            raise BackboneError(f"{self.weights}: cannot load as {self.spec.name} weights ({first_line(error)})") from error


def get_backbone(
    name: str = DEFAULT_ARCH, weights: str | None = None, input_size: tuple[int, int] | None = None, seed: int = 0
) -> Backbone:
    """Look up `name` in the registry and bind weights and input size.

    `weights` is "bundled" (offline ImageNet weights from models/), "imagenet" (Keras download), "none"
    (random, from `seed`) or a weights file; None takes the backbone's default (bundled when present).
    """
    if name not in REGISTRY:
        raise BackboneError(f"--arch {name!r}: unknown backbone; choose one of {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    weights = weights or spec.default_weights
    if weights == BUNDLED_WEIGHTS and spec.bundled is None:
        raise BackboneError(f"{name}: no bundled weights (bundled: {', '.join(OFFLINE_BACKBONES)})")
    if weights == BUNDLED_WEIGHTS and not spec.bundled.path.is_file():
        raise BackboneError(
            f"{spec.bundled.path}: bundled {name} weights not found; they come with a checkout of the repository "
            "(install it with pip install -e '.[train]'), or use --weights imagenet, --weights FILE or --weights none"
        )
    if weights not in (RANDOM_WEIGHTS, IMAGENET_WEIGHTS, BUNDLED_WEIGHTS) and not Path(weights).is_file():
        raise BackboneError(f"{weights}: weights file not found (use bundled, imagenet, none, or a weights file)")
    return Backbone(spec=spec, weights=weights, input_size=input_size or spec.input_size, seed=seed)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
