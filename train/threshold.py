"""The operating threshold of a two-class model, chosen on the validation split.

The model's probabilities stay as they are; the threshold says from which probability of the positive
class an image is called positive. By default it maximises balanced accuracy on the validation split;
with a target recall it is the highest threshold that still finds that share of the validation
positives (so the fewest false alarms at that recall). It is stored in the model's metadata and the
runtime applies it.
"""

from __future__ import annotations

import numpy as np

from runtime.metadata import DecisionThreshold


def choose_threshold(positive_scores: np.ndarray, is_positive: np.ndarray, positive: str, target_recall: float | None = None) -> DecisionThreshold:
    """The threshold on `positive_scores` (probability of class `positive`) for the labels `is_positive`.

    Candidates are 0, 0.5 and the midpoints between neighbouring validation scores. A validation split is
    small, so a candidate counts as best when it is within one image of the best balanced accuracy
    (0.5 / images of the smaller class), and of those the one nearest 0.5 wins: the head is fitted with
    balanced class weights, so 0.5 moves only for a gain larger than one image's luck. Raises
    ValueError when the validation split lacks either class.
    """
    scores = np.asarray(positive_scores, dtype=np.float64)
    truth = np.asarray(is_positive, dtype=bool)
    if truth.all() or not truth.any():
        raise ValueError("the validation split needs images of both classes to choose a threshold")
    if not np.isfinite(scores).all():
        raise ValueError("validation scores must be finite numbers")
    distinct = np.unique(scores)
    candidates = np.unique(np.concatenate([[0.0, 0.5], (distinct[1:] + distinct[:-1]) / 2]))  # 0.0: recall 1
    called = scores[None, :] >= candidates[:, None]
    recall = (called & truth).sum(axis=1) / truth.sum()
    specificity = (~called & ~truth).sum(axis=1) / (~truth).sum()
    balanced = (recall + specificity) / 2
    if target_recall is None:
        one_image = 0.5 / min(truth.sum(), (~truth).sum())
        near_best = np.flatnonzero(balanced >= balanced.max() - one_image - 1e-12)
        best = int(near_best[np.argmin(np.abs(candidates[near_best] - 0.5))])
        rule = "best balanced accuracy on the validation split (within one image), nearest 0.5"
    else:
        best = int(np.flatnonzero(recall >= target_recall).max())  # threshold 0.0 always qualifies
        rule = f"highest threshold with {positive} recall >= {target_recall:g} on the validation split"
    return DecisionThreshold(
        positive=positive,
        threshold=float(candidates[best]),
        rule=rule,
        validation={"recall": float(recall[best]), "specificity": float(specificity[best]), "balanced_accuracy": float(balanced[best])},
    )
