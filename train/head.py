"""Head training: a small softmax classifier fitted on cached bottleneck features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np


@dataclass(frozen=True)
class HeadConfig:
    """Hyper-parameters of head training."""

    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-2
    l2: float = 0.03
    lr_decay: float = 0.95
    patience: int = 10
    class_weights: bool = True
    dropout: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class HeadResult:
    """The trained head, the epoch whose weights it kept, and the per-epoch metrics."""

    model: keras.Model
    best_epoch: int
    history: dict[str, list[float]]


def build_head(
    feature_dim: int, n_classes: int, dropout: float, training_features: np.ndarray | None = None, l2: float = 0.0
) -> keras.Model:
    """features (N, feature_dim) -> class probabilities (N, n_classes).

    With `training_features`, the head first standardises each feature with their mean and standard
    deviation (constants of a Rescaling layer, exported with the model), which makes the softmax layer
    far easier to fit.
    """
    features = keras.Input((feature_dim,), name="features")
    hidden = features
    if training_features is not None:
        mean = training_features.mean(axis=0, dtype=np.float64)
        std = np.maximum(training_features.std(axis=0, dtype=np.float64), 1e-6)
        hidden = keras.layers.Rescaling(scale=(1 / std).tolist(), offset=(-mean / std).tolist(), name="standardise")(hidden)
    hidden = keras.layers.Dropout(dropout, name="head_dropout")(hidden)
    probabilities = keras.layers.Dense(
        n_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(l2) if l2 else None, name="probabilities"
    )(hidden)
    return keras.Model(features, probabilities, name="head")


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Weights inversely proportional to class frequency (mean weight per sample is 1)."""
    counts = np.bincount(labels, minlength=n_classes)
    return {i: float(len(labels) / (n_classes * count)) if count else 0.0 for i, count in enumerate(counts)}


def train_head(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    n_classes: int,
    config: HeadConfig,
    report: Callable[[str], None] = print,
) -> HeadResult:
    """Fit the head with Adam and an exponentially decaying learning rate.

    With a validation split, training stops early when validation cross-entropy has not improved for
    `patience` epochs and the best epoch's weights are restored. `report` receives one
    `Phase: Training, Dataset used: ...` line per split per epoch.
    """
    keras.utils.set_random_seed(config.seed)
    features, labels = train
    model = build_head(features.shape[1], n_classes, config.dropout, features, config.l2)
    steps_per_epoch = max(1, math.ceil(len(features) / config.batch_size))
    schedule = keras.optimizers.schedules.ExponentialDecay(
        config.learning_rate, decay_steps=steps_per_epoch, decay_rate=config.lr_decay
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    callbacks: list[keras.callbacks.Callback] = [_PhaseLines(report)]
    if validation is not None and len(validation[0]):
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
        )
    history = model.fit(
        features,
        labels,
        validation_data=validation if validation is not None and len(validation[0]) else None,
        epochs=config.epochs,
        batch_size=config.batch_size,
        class_weight=balanced_class_weights(labels, n_classes) if config.class_weights else None,
        shuffle=True,
        verbose=0,
        callbacks=callbacks,
    ).history
    monitored = history.get("val_loss") or history["loss"]
    return HeadResult(model=model, best_epoch=int(np.argmin(monitored)) + 1, history=history)


class _PhaseLines(keras.callbacks.Callback):
    """Per-epoch lines in the style of ML.NET's image classification trainer."""

    def __init__(self, report: Callable[[str], None]) -> None:
        super().__init__()
        self._report = report

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        for dataset, prefix in (("Training", ""), ("Validation", "val_")):
            if f"{prefix}loss" in logs:
                self._report(
                    f"Phase: Training, Dataset used: {dataset}, Epoch: {epoch + 1}, "
                    f"Accuracy: {logs[f'{prefix}accuracy']:.4f}, Cross-Entropy: {logs[f'{prefix}loss']:.4f}"
                )
