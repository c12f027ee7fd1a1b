"""MODEL.report.html: the evaluation as a page a person can read, self-contained (opens offline).

Plots (matplotlib, PNG files next to the page and embedded in it): the training curves, the confusion
matrix, and for two classes the ROC and precision-recall curves of the positive class. Below them the
per-class metrics and a gallery of the misclassified test images (thumbnails embedded) with their scores.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from sklearn import metrics

from runtime.output import prepare_output
from train.atomic import write_atomically

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from runtime.errors import ImageError  # noqa: E402
from runtime.imaging import decode_image  # noqa: E402

THUMBNAIL = 160
#: Misclassified images shown at most (the page stays small on a bad model).
GALLERY_LIMIT = 60


def report_paths(stem: Path) -> dict[str, Path]:
    """`folder/model` -> the page and its PNG plots: folder/model.report.html, folder/model.roc.png, ..."""
    return {name: Path(f"{stem}.{name}") for name in ("report.html", "curves.png", "confusion.png", "roc.png", "pr.png")}


def prepare_report(stem: Path) -> None:
    """Check, before the work, that STEM.report.json, the page and every plot can be written (see
    `runtime.output.prepare_output`): a folder in the way of any of them fails in one line at once."""
    for path in (Path(f"{stem}.report.json"), *report_paths(stem).values()):
        prepare_output(path)


def write_html_report(
    evaluation: dict[str, object],
    stem: Path,
    image_root: Path,
    title: str,
    curves: Sequence[dict[str, float]] = (),
    curve_axis: str = "epoch",
    positive: str | None = None,
    comparison: Mapping[str, Mapping[str, float]] | None = None,
    images: str = "test split",
) -> list[Path]:
    """Write STEM.report.html and its PNG plots for `evaluation` (from `train.evaluate.evaluate`), whose
    file names are relative to `image_root`.

    `curves` has one row per step of training (`curve_axis`: "epoch", or "C" for the head's
    regularisation path) with train `loss`/`accuracy` and `val_loss`/`val_accuracy`; `positive` is the
    positive class of a two-class problem (ROC and PR curves); `comparison` maps model names (head only,
    fine-tuned) to their test accuracy and balanced accuracy, shown as a table; `images` names the images
    evaluated in headings and captions ("test split", or a folder for `evaluate-model`). Returns the files
    written.
    """
    paths = report_paths(stem)
    with matplotlib.rc_context({"text.parse_math": False}):  # class names are folder names, not TeX
        figures = _plot_all(evaluation, paths, curves, curve_axis, positive, images)
    page = _page(evaluation, title, figures, image_root, comparison or {}, images)
    # A file name that is not UTF-8 (surrogate-escaped by Python) is written with backslash escapes.
    write_atomically(paths["report.html"], page.encode("utf-8", errors="backslashreplace"))
    drawn = [path for _, path in figures]
    for stale in set(paths.values()) - set(drawn) - {paths["report.html"]}:  # a plot an earlier run drew, this one not
        stale.unlink(missing_ok=True)
    return [paths["report.html"], *drawn]


def _plot_all(
    evaluation: dict[str, object], paths: dict[str, Path], curves: Sequence[dict[str, float]], curve_axis: str, positive: str | None, images: str
) -> list[tuple[str, Path]]:
    """Draw every plot the evaluation has; return (caption, PNG path) pairs."""
    figures = []
    if curves:
        _plot_curves(curves, curve_axis, paths["curves.png"])
        figures.append(("Training curves", paths["curves.png"]))
    _plot_confusion(evaluation["confusion_matrix"], paths["confusion.png"])
    figures.append((f"Confusion matrix ({images})", paths["confusion.png"]))
    labels = evaluation["confusion_matrix"]["labels"]
    if len(labels) == 2 and evaluation["predictions"]:
        positive = positive or labels[1]
        scores, truth = _positive_scores(evaluation["predictions"], labels, positive)
        if 0 < truth.sum() < len(truth):
            _plot_roc(scores, truth, positive, paths["roc.png"])
            _plot_pr(scores, truth, positive, paths["pr.png"])
            figures += [(f"ROC curve ({positive} positive)", paths["roc.png"]), (f"Precision-recall curve ({positive} positive)", paths["pr.png"])]
    return figures


def _positive_scores(predictions: Sequence[dict[str, object]], labels: Sequence[str], positive: str) -> tuple[np.ndarray, np.ndarray]:
    column = list(labels).index(positive)
    scores = np.array([row["probabilities"][column] for row in predictions])
    truth = np.array([row["actual"] == positive for row in predictions], dtype=int)
    return scores, truth


def _plot_curves(curves: Sequence[dict[str, float]], axis: str, path: Path) -> None:
    x = [row[axis.lower()] if axis.lower() in row else index + 1 for index, row in enumerate(curves)]
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, style, name in (("loss", "-o", "train"), ("val_loss", "--s", "validation")):
        if all(key in row for row in curves):
            loss.plot(x, [row[key] for row in curves], style, label=name)
    for key, style, name in (("accuracy", "-o", "train"), ("val_accuracy", "--s", "validation")):
        if all(key in row for row in curves):
            accuracy.plot(x, [row[key] for row in curves], style, label=name)
    for axes, name in ((loss, "cross-entropy loss"), (accuracy, "accuracy")):
        axes.set(xlabel=axis, ylabel=name)
        if axis == "C":
            axes.set_xscale("log")
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_confusion(confusion: dict[str, object], path: Path) -> None:
    labels, matrix = confusion["labels"], np.array(confusion["rows_actual_columns_predicted"])
    figure, axes = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    axes.imshow(matrix, cmap="Blues")
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels, xlabel="predicted", ylabel="actual")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plot_roc(scores: np.ndarray, truth: np.ndarray, positive: str, path: Path) -> None:
    false_positive, true_positive, _ = metrics.roc_curve(truth, scores)
    area = metrics.roc_auc_score(truth, scores)
    _line_plot(path, false_positive, true_positive, f"AUC {area:.3f}", "false positive rate", f"true positive rate ({positive})", diagonal=True)


def _plot_pr(scores: np.ndarray, truth: np.ndarray, positive: str, path: Path) -> None:
    precision, recall, _ = metrics.precision_recall_curve(truth, scores)
    average = metrics.average_precision_score(truth, scores)
    _line_plot(path, recall, precision, f"average precision {average:.3f}", f"recall ({positive})", "precision", diagonal=False)


def _line_plot(path: Path, x: np.ndarray, y: np.ndarray, label: str, x_label: str, y_label: str, diagonal: bool) -> None:
    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot(x, y, label=label)
    if diagonal:
        axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right" if diagonal else "lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _thumbnail(path: Path) -> str | None:
    try:
        pixels = decode_image(path, target_size=(THUMBNAIL, THUMBNAIL))
    except ImageError:
        return None
    image = Image.fromarray(pixels)
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return _data_uri(buffer.getvalue(), "image/jpeg")


def _page(
    evaluation: dict[str, object],
    title: str,
    figures: list[tuple[str, Path]],
    image_root: Path,
    comparison: Mapping[str, Mapping[str, float]],
    images: str,
) -> str:
    escape = html.escape
    comparison_rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{m['accuracy']:.4f}</td><td>{m['balanced_accuracy']:.4f}</td></tr>" for name, m in comparison.items()
    )
    compared = (
        "<h2>Head only vs fine-tuned (same test split)</h2><table id=\"comparison\"><tr><th>model</th><th>accuracy</th>"
        f"<th>balanced accuracy</th></tr>{comparison_rows}</table>"
    ) if comparison_rows else ""
    summary = (
        f"{evaluation['images']} images ({images}) | accuracy {evaluation['accuracy']:.4f} | "
        f"balanced accuracy {evaluation['balanced_accuracy']:.4f} | log-loss {evaluation['log_loss']:.4f}"
    )
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td>{m['precision']:.4f}</td><td>{m['recall']:.4f}</td><td>{m['f1']:.4f}</td><td>{m['support']}</td></tr>"
        for label, m in evaluation["per_class"].items()
    )
    plots = "".join(
        f'<figure><img alt="{escape(name)}" src="{_data_uri(path.read_bytes(), "image/png")}"><figcaption>{escape(name)}</figcaption></figure>'
        for name, path in figures
    )
    misclassified = evaluation["misclassified"]
    cards = []
    for row in misclassified[:GALLERY_LIMIT]:
        source = _thumbnail(image_root / row["file"])
        picture = f'<img alt="{escape(row["file"])}" src="{source}">' if source else "<div class='missing'>image not readable</div>"
        cards.append(
            f'<div class="card">{picture}<p>{escape(row["file"])}<br>actual <b>{escape(row["actual"])}</b>, predicted '
            f'<b>{escape(row["predicted"])}</b> ({row["score"]:.2f})</p></div>'
        )
    more = f"<p>{len(misclassified) - GALLERY_LIMIT} more not shown.</p>" if len(misclassified) > GALLERY_LIMIT else ""
    gallery = "".join(cards) or "<p>None: every image is classified correctly.</p>"
    skipped = evaluation.get("skipped_images", [])  # evaluate-model lists the images it could not read
    unreadable = (
        f'<h2>Unreadable images, left out ({len(skipped)})</h2><ul id="skipped">{"".join(f"<li>{escape(line)}</li>" for line in skipped)}</ul>'
        if skipped else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }} figure img {{ max-width: 520px; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 12px; }} .card {{ width: {THUMBNAIL + 20}px; font-size: 12px; }}
.missing {{ width: {THUMBNAIL}px; height: {THUMBNAIL}px; background: #eee; }}
</style></head><body>
<h1>{escape(title)}</h1>
<p id="summary">{escape(summary)}</p>
{compared}
<h2>Plots</h2>
<div id="plots">{plots}</div>
<h2>Per-class metrics</h2>
<table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Misclassified images ({len(misclassified)} of the {escape(images)})</h2>
<div class="gallery" id="misclassified">{gallery}{more}</div>
{unreadable}
</body></html>
"""
