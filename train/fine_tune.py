"""`--fine-tune-layers K`: after the head, train the top K backbone layers and the head end to end.

It runs on real image batches (not cached features), through the same fused model that is exported
(all symmetry views, averaged), at a low learning rate with Adam, for a few epochs; batch-normalisation
layers stay frozen (their running statistics come from ImageNet and a few hundred images would only
make them noisier). Each epoch's training and validation loss and accuracy become the report's curves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

#: Learning rate of the end-to-end epochs: low, so the pretrained features move, not break.
LEARNING_RATE = 3e-5


@dataclass(frozen=True)
class FineTuneConfig:
    """How much of the backbone to train (0: none, the head only) and for how long."""

    layers: int = 0
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = LEARNING_RATE


def fine_tune(
    fused: keras.Model,
    extractor: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    config: FineTuneConfig,
    seed: int = 0,
) -> list[dict[str, float]]:
    """Train `fused` (which contains `extractor` and the head) on uint8 image batches, in place.

    Unfreezes the last `config.layers` layers of `extractor` that have weights (batch normalisation
    excepted) and the whole head; classes are weighted by inverse frequency, like the head's fit.
    Returns one dict per epoch: epoch, loss, accuracy, val_loss, val_accuracy.
    """
    trainable = [layer for layer in _leaf_layers(extractor) if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    for layer in _leaf_layers(extractor):
        layer.trainable = False
    for layer in trainable[-config.layers :] if config.layers else []:
        layer.trainable = True
    keras.utils.set_random_seed(seed)
    pixels, labels = train
    counts = np.bincount(labels, minlength=fused.output_shape[-1])
    weights = {index: len(labels) / (np.count_nonzero(counts) * count) for index, count in enumerate(counts) if count}
    fused.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = fused.fit(
        pixels, labels, batch_size=config.batch_size, epochs=config.epochs, validation_data=validation if len(validation[0]) else None,
        class_weight=weights, shuffle=True, verbose=0,
    ).history
    return [{"epoch": epoch + 1, **{key: float(values[epoch]) for key, values in history.items()}} for epoch in range(config.epochs)]


def _leaf_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside `layer`, nested models opened up."""
    children = getattr(layer, "layers", None)
    if children is None:
        yield layer
        return
    for child in children:
        yield from _leaf_layers(child)
