"""Head training: a softmax classifier fitted on cached bottleneck features.

The head is multinomial logistic regression on standardised features, fitted to convergence with L-BFGS
(scikit-learn) for each inverse regularisation strength C in a small grid; the C whose model gives the
lowest validation cross-entropy wins. The fit is convex and deterministic: the same features always give
the same head, so results do not hinge on a lucky optimiser run. The winner becomes a two-layer Keras
model (standardise, then dense softmax) that is fused with the backbone and exported.

Features come as (images, views, feature_dim) (see `train.views`): the head trains on every view as its
own example and scores an image by its class probabilities averaged over the views, as the exported
model does.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss

#: Inverse L2 strengths tried by default, weakest regularisation last.
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
#: C used when there is no validation split to choose with.
DEFAULT_C = 0.01
ABSENT_CLASS_LOGIT = -30.0
#: A feature whose standard deviation over the training views is below this is constant: left out of the head.
CONSTANT_FEATURE_STD = 1e-6
#: Least spread a varying feature is standardised by, as a share of the median feature's spread.
MIN_RELATIVE_STD = 0.05
#: Rows standardised at a time (bounds the float64 working memory: 4096 x 2048 features is 64 MB).
CHUNK_ROWS = 4096


@dataclass(frozen=True)
class HeadConfig:
    """How the head is fitted."""

    c_values: Sequence[float] = C_GRID
    class_weights: bool = True
    max_iterations: int = 1000


@dataclass(frozen=True)
class HeadResult:
    """The trained head, the C it was fitted with, and the train/validation metrics of every C tried."""

    model: keras.Model
    c: float
    candidates: list[dict[str, float]]


def build_head(feature_dim: int, n_classes: int, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> keras.Model:
    """features (N, feature_dim) -> class probabilities (N, n_classes): standardise, then dense softmax.

    `mean` and `std` (per feature, from the training split) become constants of a Rescaling layer, so the
    exported graph standardises by itself; a feature with `std` inf is scaled by 0 (left out).
    """
    mean = np.zeros(feature_dim) if mean is None else mean
    std = np.ones(feature_dim) if std is None else std
    features = keras.Input((feature_dim,), name="features")
    standardised = keras.layers.Rescaling(scale=(1 / std).tolist(), offset=(-mean / std).tolist(), name="standardise")(features)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(standardised)
    return keras.Model(features, probabilities, name="head")


def predict_views(head: keras.Model, features: np.ndarray) -> np.ndarray:
    """Class probabilities of (images, views, feature_dim) features, averaged over the views."""
    images, views, dim = features.shape
    per_view = np.asarray(head(features.reshape(images * views, dim), training=False))
    return per_view.reshape(images, views, per_view.shape[-1]).mean(axis=1)  # also for no images


def train_head(
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray] | None,
    n_classes: int,
    config: HeadConfig,
    report: Callable[[str], None] = print,
) -> HeadResult:
    """Fit the head on `train` features (images, views, dim) and labels, choosing C on `validation`.

    `report` receives one `Phase: Training, Dataset used: ...` line per split per C tried.
    """
    features, labels = train
    images, views, dim = features.shape
    flat = features.reshape(-1, dim)
    mean = flat.mean(axis=0, dtype=np.float64)
    std = _standardising_std(flat, mean)
    rows = standardised_rows(flat, mean, std)
    row_labels = np.repeat(labels, views)
    has_validation = validation is not None and len(validation[0]) > 0
    c_values = sorted(config.c_values) if has_validation else [_c_without_validation(config.c_values)]
    solver = LogisticRegression(
        C=c_values[0], class_weight="balanced" if config.class_weights else None, max_iter=config.max_iterations,
        warm_start=True,
    )
    candidates, best = [], None
    for c in c_values:
        solver.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            solver.fit(rows, row_labels)
        if solver.n_iter_.max() >= config.max_iterations:  # sklearn's warning is many lines; this is one
            report(f"note: C: {c:g}: L-BFGS stopped after {config.max_iterations} iterations before converging")
        head = _as_keras(solver, dim, n_classes, mean, std)
        scores = {"c": c, **_scores(head, "", features, labels, n_classes)}
        if has_validation:
            scores.update(_scores(head, "val_", *validation, n_classes))
        candidates.append(scores)
        for dataset, prefix in (("Training", ""), ("Validation", "val_")):
            if f"{prefix}loss" in scores:
                report(
                    f"Phase: Training, Dataset used: {dataset}, C: {c:g}, "
                    f"Accuracy: {scores[f'{prefix}accuracy']:.4f}, Cross-Entropy: {scores[f'{prefix}loss']:.4f}"
                )
        monitored = scores["val_loss" if has_validation else "loss"]
        if best is None or monitored < best[0]:
            best = (monitored, c, head)
    return HeadResult(model=best[2], c=best[1], candidates=candidates)


def standardised_rows(rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """float32 `(rows - mean) / std`, computed in float64 `CHUNK_ROWS` rows at a time: memory beyond the
    result stays small (a whole float64 copy of 10,000 images x 8 views x 2048 features is 1.3 GB)."""
    standardised = np.empty(rows.shape, np.float32)
    for chunk in _chunks(len(rows)):
        standardised[chunk] = (rows[chunk] - mean) / std
    return standardised


def _chunks(count: int) -> list[slice]:
    """Consecutive slices of at most `CHUNK_ROWS` rows covering `count` rows."""
    return [slice(start, start + CHUNK_ROWS) for start in range(0, count, CHUNK_ROWS)]


def _standardising_std(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Per feature, what the head divides by after subtracting the `mean`: the standard deviation over the
    training rows (in float64, `CHUNK_ROWS` at a time), with two guards against features that (nearly) never vary.

    A feature constant on the training images (a channel dead at this input size) teaches nothing: inf
    (scale 0) keeps it out of the head. A feature active on only a few images is divided by no less than
    `MIN_RELATIVE_STD` of the median feature's spread: divided by its own tiny spread, a later change
    (fine-tuning waking the channel, an unusual image) would swing the logits by thousands of times that change.
    """
    squares = np.zeros(rows.shape[1])
    for chunk in _chunks(len(rows)):
        squares += ((rows[chunk] - mean) ** 2).sum(axis=0)
    std = np.sqrt(squares / len(rows))
    varying = std >= CONSTANT_FEATURE_STD
    floor = MIN_RELATIVE_STD * np.median(std[varying]) if varying.any() else 0.0
    return np.where(varying, np.maximum(std, floor), np.inf)


def _c_without_validation(c_values: Sequence[float]) -> float:
    """The C to fit with when there is no validation split to choose by: the only one given, else `DEFAULT_C`."""
    return c_values[0] if len(c_values) == 1 else DEFAULT_C


def describe_choice(result: HeadResult, config: HeadConfig) -> str:
    """How the head's C was chosen, for the console."""
    if "val_loss" in result.candidates[0]:
        return f"lowest validation cross-entropy of {len(result.candidates)} tried"
    given = "the one --c-values gave" if len(config.c_values) == 1 else "the default; choosing among --c-values needs validation images"
    return f"no validation images: {given}"


def _as_keras(solver: LogisticRegression, dim: int, n_classes: int, mean: np.ndarray, std: np.ndarray) -> keras.Model:
    """The fitted logistic regression as a Keras head (binary: logits 0 and w.x + b give the same softmax).

    A class with no training images gets a bias that keeps its probability near zero.
    """
    kernel = np.zeros((dim, n_classes), np.float32)
    bias = np.full(n_classes, ABSENT_CLASS_LOGIT, np.float32)
    classes = solver.classes_
    if len(classes) == 2:
        kernel[:, classes[1]], bias[classes] = solver.coef_[0], (0.0, solver.intercept_[0])
    else:
        kernel[:, classes], bias[classes] = solver.coef_.T, solver.intercept_
    head = build_head(dim, n_classes, mean, std)
    head.get_layer("probabilities").set_weights([kernel, bias])
    return head


def _scores(head: keras.Model, prefix: str, features: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    probabilities = predict_views(head, features)
    return {
        f"{prefix}accuracy": float(accuracy_score(labels, probabilities.argmax(axis=1))),
        f"{prefix}loss": float(log_loss(labels, probabilities, labels=list(range(n_classes)))),
    }
