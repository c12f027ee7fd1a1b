"""`--fine-tune-layers K`: after the head, train the top K backbone layers and the head end to end.

It runs on real image batches (not cached features), through the same fused model that is exported
(all symmetry views, averaged), at a low learning rate with Adam, for a few epochs; batch-normalisation
layers stay frozen (their running statistics come from ImageNet and a few hundred images would only
make them noisier). Each epoch's training and validation loss and accuracy become the report's curves.

The model kept is the one with the lowest validation loss, the head-only start (epoch 0) included: with a
few hundred images an epoch can overfit or overshoot, and the validation split (never the test split)
decides whether fine-tuning helped at all. Without validation images the last epoch is kept.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class FineTuneResult:
    """The per-epoch curves (epoch, loss, accuracy, val_loss, val_accuracy) and the epoch whose weights
    the model now holds (0: none beat the head-only start on validation loss)."""

    curves: list[dict[str, float]]
    kept_epoch: int
    #: Backbone layers actually trained: `FineTuneConfig.layers`, or all that can train if there are fewer.
    trained_layers: int


def fine_tune(
    fused: keras.Model,
    extractor: keras.Model,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    config: FineTuneConfig,
    seed: int = 0,
) -> FineTuneResult:
    """Train `fused` (which contains `extractor` and the head) on uint8 image batches, in place.

    Unfreezes the last `config.layers` layers of `extractor` that have weights (batch normalisation
    excepted) and the whole head; classes are weighted by inverse frequency, like the head's fit.
    Leaves `fused` with the weights of the epoch of lowest validation loss (see the module docstring).
    """
    trainable = [layer for layer in _leaf_layers(extractor) if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)]
    for layer in _leaf_layers(extractor):
        layer.trainable = False
    unfrozen = trainable[-config.layers :] if config.layers else []
    for layer in unfrozen:
        layer.trainable = True
    keras.utils.set_random_seed(seed)
    pixels, labels = train
    counts = np.bincount(labels, minlength=fused.output_shape[-1])
    weights = {index: len(labels) / (np.count_nonzero(counts) * count) for index, count in enumerate(counts) if count}
    fused.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    fit = functools.partial(
        fused.fit, pixels, labels, batch_size=config.batch_size, epochs=config.epochs, class_weight=weights, shuffle=True, verbose=0
    )
    if not len(validation[0]):
        return FineTuneResult(_curves(fit().history, config.epochs), config.epochs, len(unfrozen))
    start = fused.get_weights()
    start_loss = float(fused.evaluate(*validation, batch_size=config.batch_size, verbose=0)[0])
    with tempfile.TemporaryDirectory(prefix="retrain-fine-tune-") as scratch:
        best = Path(scratch) / "best.weights.h5"
        keep_best = keras.callbacks.ModelCheckpoint(
            best, monitor="val_loss", save_best_only=True, save_weights_only=True,
            initial_value_threshold=np.inf if np.isnan(start_loss) else start_loss,
        )
        history = fit(validation_data=validation, callbacks=[keep_best]).history
        if best.exists():
            fused.load_weights(best)
        else:
            fused.set_weights(start)
    losses = np.nan_to_num([start_loss, *history["val_loss"]], nan=np.inf)  # a NaN loss is never kept (nor saved by the callback)
    return FineTuneResult(_curves(history, config.epochs), int(np.argmin(losses)), len(unfrozen))


def _curves(history: dict[str, list[float]], epochs: int) -> list[dict[str, float]]:
    """Keras' `fit` history as one dict per epoch."""
    return [{"epoch": epoch + 1, **{key: float(values[epoch]) for key, values in history.items()}} for epoch in range(epochs)]


def _leaf_layers(layer: keras.layers.Layer) -> Iterator[keras.layers.Layer]:
    """Every layer inside `layer`, nested models opened up."""
    children = getattr(layer, "layers", None)
    if children is None:
        yield layer
        return
    for child in children:
        yield from _leaf_layers(child)
