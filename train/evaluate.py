"""Evaluation on a held-out split: metrics, a printed table and a JSON report."""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn import metrics

from runtime.classifier import decide
from runtime.metadata import DecisionThreshold


def _balanced_accuracy(true_indices: np.ndarray, predicted: np.ndarray) -> float:
    """Mean recall over the classes the images belong to. A folder of field images may hold one class
    only; scikit-learn then warns that predictions name classes not present, which is expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(metrics.balanced_accuracy_score(true_indices, predicted))


def evaluate(
    probabilities: np.ndarray,
    true_indices: np.ndarray,
    labels: Sequence[str],
    files: Sequence[str],
    threshold: DecisionThreshold | None = None,
) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, log-loss, confusion matrix,
    misclassified files and every prediction, as a JSON-ready dict. Predictions follow `threshold`
    (two classes) as the runtime does, else the most probable class."""
    predicted = np.array([decide(row, labels, threshold) for row in probabilities], dtype=np.int64)
    indices = list(range(len(labels)))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        true_indices, predicted, labels=indices, zero_division=0
    )
    return {
        "images": int(len(true_indices)),
        "accuracy": float(metrics.accuracy_score(true_indices, predicted)),
        "balanced_accuracy": _balanced_accuracy(true_indices, predicted),
        "log_loss": float(metrics.log_loss(true_indices, _normalised(probabilities), labels=indices)),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": {
            "labels": list(labels),
            "rows_actual_columns_predicted": metrics.confusion_matrix(true_indices, predicted, labels=indices).tolist(),
        },
        "misclassified": [
            {"file": files[i], "actual": labels[true_indices[i]], "predicted": labels[predicted[i]], "score": float(probabilities[i, predicted[i]])}
            for i in np.flatnonzero(predicted != true_indices)
        ],
        "predictions": [
            {"file": file, "actual": labels[actual], "predicted": labels[guess], "probabilities": [float(p) for p in row]}
            for file, actual, guess, row in zip(files, true_indices, predicted, probabilities)
        ],
    }


def print_report(report: dict[str, object], console: Console, title: str = "Test split") -> None:
    """Print the summary metrics, the per-class table and the confusion matrix."""
    console.print(
        f"{title}: {report['images']} images | accuracy {report['accuracy']:.4f} | "
        f"balanced accuracy {report['balanced_accuracy']:.4f} | log-loss {report['log_loss']:.4f}"
    )
    per_class = Table("class", "precision", "recall", "F1", "support", title="Per class")
    for label, row in report["per_class"].items():
        per_class.add_row(label, f"{row['precision']:.4f}", f"{row['recall']:.4f}", f"{row['f1']:.4f}", str(row["support"]))
    console.print(per_class)
    confusion = report["confusion_matrix"]
    matrix = Table("actual \\ predicted", *confusion["labels"], title="Confusion matrix")
    for label, row in zip(confusion["labels"], confusion["rows_actual_columns_predicted"]):
        matrix.add_row(label, *map(str, row))
    console.print(matrix)


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """Rows in float64 summing to 1: float32 softmax rows miss 1 by a few 1e-8, which sklearn warns about."""
    rows = np.asarray(probabilities, dtype=np.float64)
    return rows / rows.sum(axis=1, keepdims=True)
