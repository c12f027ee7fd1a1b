"""`evaluate-model MODEL.onnx DATA_DIR`: the training report's metrics and page for any labelled folder.

Inference runs through `runtime` alone (no TensorFlow), so a deployed model can be checked on new field
data: every image of DATA_DIR (labels from sub-folder names or file-name prefixes) is classified as
`classify` would, with the model's decision threshold, and the metrics, the JSON report and the HTML page
(with its plots) are written next to the model as MODEL.eval-<folder>.report.{json,html}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from train import ONNX_TOOLS, require_train_extra

require_train_extra("evaluate-model", ONNX_TOOLS)

import numpy as np  # noqa: E402
import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from runtime.classifier import Classifier  # noqa: E402
from train.atomic import write_atomically  # noqa: E402
from train.cli_common import exit_on_error  # noqa: E402
from train.console import flagged, print_skipped, training_console  # noqa: E402
from train.data import DatasetError, LabelSource, check_data_folder, labelled_images, unlabelled_note  # noqa: E402
from train.evaluate import evaluate, print_report  # noqa: E402
from train.html_report import prepare_report, write_html_report  # noqa: E402
from train.model_files import own_report_stems, sibling

app = typer.Typer(add_completion=False, help="Evaluate an exported model on a labelled folder (runtime only).")


@app.command()
def evaluate_model(
    model: Path = typer.Argument(..., help="Model file written by train-model --export."),
    data_dir: Path = typer.Argument(..., help="Labelled images: one sub-folder per class (or see --labels-from)."),
    labels_from: LabelSource = typer.Option(LabelSource.folder, "--labels-from", help="Labels from sub-folder names or file-name prefixes."),
    report: Optional[Path] = typer.Option(None, "--report", help="Report path stem (default: MODEL.eval-<folder> next to the model)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per inference batch."),
) -> None:
    """Classify every labelled image of DATA_DIR and write STEM.report.json and STEM.report.html."""
    console = training_console()
    with exit_on_error("no report written (it is written once every image has run)"):
        classifier = Classifier(model)
        stem = report or sibling(model, f".eval-{data_dir.resolve().name}")
        if any(stem.resolve() == own.resolve() for own in own_report_stems(model)):
            raise typer.BadParameter(f"{stem} is the stem of the training or variant report of {model}; writing there would replace it", param_hint="'--report'")
        prepare_report(stem)  # before the images run: a bad --report fails at once
        evaluation = run_evaluation(classifier, data_dir, labels_from, batch_size, console)
        write_atomically(Path(f"{stem}.report.json"), json.dumps({"model": str(model), "data": str(data_dir), **evaluation}, indent=2).encode("utf-8"))
        threshold = classifier.metadata.decision_threshold
        page, *_ = write_html_report(
            evaluation, stem, data_dir, f"{model.name} on {data_dir}", positive=threshold.positive if threshold else None,
            images=f"folder {data_dir}",
        )
        console.print(f"Report: {stem}.report.json and {page}")


def run_evaluation(classifier: Classifier, data_dir: Path, labels_from: LabelSource, batch_size: int, console: Console) -> dict[str, object]:
    """The metrics of `classifier` on every labelled image of `data_dir`; unreadable images are listed and skipped."""
    check_data_folder(data_dir)
    images, unlabelled, unreadable = labelled_images(data_dir, labels_from)
    if unlabelled:
        console.print(flagged("note:", unlabelled_note(unlabelled, labels_from)))
    print_skipped(unreadable, console)
    unknown = sorted({image.label for image in images} - set(classifier.labels))
    if unknown:
        raise DatasetError(f"{data_dir}: class(es) {', '.join(unknown)} are not among the model's labels {classifier.labels}")
    if not images:
        raise DatasetError(f"{data_dir}: no labelled images found")
    rows, truth, files, skipped = [], [], [], [str(error) for error in unreadable]
    for image, result in zip(images, classifier.classify_files([image.path for image in images], batch_size)):
        if result.prediction is None:
            skipped.append(str(result.error))
            print_skipped([result.error], console)
            continue
        rows.append([result.prediction.probabilities[label] for label in classifier.labels])
        truth.append(classifier.labels.index(image.label))
        files.append(image.relative)
    if not rows:
        raise DatasetError(f"{data_dir}: none of the {len(images)} images could be read")
    evaluation = evaluate(np.array(rows), np.array(truth), classifier.labels, files, classifier.metadata.decision_threshold)
    print_report(evaluation, console, title=str(data_dir))
    return {**evaluation, "skipped_images": skipped}


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
