"""The models every engine runs: one backbone + head, as Keras/TensorFlow and as the exported ONNX file.

Speed does not depend on the head's weights, so the head is a randomly initialised softmax layer and no
training is needed. Each model is built once per benchmark run in a scratch folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from runtime import __version__
from runtime.imaging import RESIZE_METHOD, load_for_model
from runtime.metadata import ModelMetadata
from train.backbones import Backbone, get_backbone
from train.export import export_onnx, fuse
from train.head import build_head
from train.views import symmetry_views

LABELS = ["CD", "UD"]


@dataclass(frozen=True)
class BackboneChoice:
    """A backbone as benchmarked: registry name, weights ("bundled", "none", ...) and square input size."""

    arch: str
    weights: str
    size: int | None = None

    def backbone(self) -> Backbone:
        """The registry entry with these weights and size."""
        return get_backbone(self.arch, self.weights, (self.size, self.size) if self.size else None, seed=0)


@dataclass
class BenchModel:
    """One classifier in both engines: the Keras model, a TensorFlow function of it, and its ONNX file."""

    choice: BackboneChoice
    backbone: Backbone
    keras_model: keras.Model
    onnx_path: Path
    views: int

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.backbone.input_size

    def tensorflow_function(self):
        """The best plain-TensorFlow path: `model(x, training=False)` inside a `tf.function`."""
        model = self.keras_model

        @tf.function(reduce_retracing=True)
        def predict(images: tf.Tensor) -> tf.Tensor:
            return model(images, training=False)

        return predict


def build(choice: BackboneChoice, folder: Path, sample_images: Sequence[Path], views: int = 1) -> BenchModel:
    """Fuse `choice`'s backbone with a random head and export it to `folder`, parity-checked on `sample_images`."""
    backbone = choice.backbone()
    parity_pixels = np.stack([load_for_model(path, backbone.input_size) for path in sample_images[:4]])
    keras.utils.set_random_seed(0)
    extractor = backbone.build_extractor()
    model = fuse(extractor, build_head(backbone.spec.feature_dim, len(LABELS)), symmetry_views(views, backbone.input_size))
    metadata = ModelMetadata(
        labels=LABELS, input_height=backbone.input_size[0], input_width=backbone.input_size[1],
        resize_method=RESIZE_METHOD, backbone=backbone.spec.name, weights=backbone.weights_identity,
        preprocessing=backbone.preprocessing.name, toolkit_version=__version__, trained_at="benchmark", views=views,
    )
    path = folder / f"{choice.arch}-{views}view.onnx"
    export_onnx(model, metadata, path, parity_pixels)
    return BenchModel(choice, backbone, model, path, views)
