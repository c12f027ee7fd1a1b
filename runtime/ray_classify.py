"""`classify --engine ray`: classify a large folder or list file with Ray Data.

Imported only for `--engine ray` (Ray is the optional `[ray]` extra). The file names stream through
`map_batches` to a pool of actors, each holding one onnxruntime session (a `Classifier`); results come
back in input order and are handed on one by one, so the driver's memory stays flat however many files
there are. Every worker must be able to read the model and the images at the same paths (one machine,
or a shared volume on a cluster). Relative names are read from the driver's working directory, as the
local engine reads them, not from the worker's (Ray starts workers where the cluster was started);
results name the files as the local engine does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import ray

from runtime.classifier import Classifier, FileResult
from runtime.distributed import RayInput, actor_count, ray_connection
from runtime.errors import ImageError
from runtime.imaging import image_files
from runtime.session import SessionSettings

FILE_COLUMN = "file"
TEXT_COLUMN = "text"  # the column `ray.data.read_text` gives each line


class BatchClassifier:
    """A Ray Data actor: one `Classifier` (single-threaded session), a batch of file names in, results out.

    Relative names are read from `base_dir` (the driver's working directory); results name the files as
    the local engine does (list lines stripped and normalised, other names as given).
    """

    def __init__(self, model: str, providers: str, column: str, base_dir: str) -> None:
        self._classifier = Classifier(model, providers=providers, settings=SessionSettings(intra_op_threads=1))
        self._column = column
        self._base_dir = Path(base_dir)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._column == TEXT_COLUMN:  # list lines, named as the local engine names them
            files = [str(Path(str(line).strip())) for line in batch[self._column]]
        else:
            files = [str(name) for name in batch[self._column]]
        readable = [str(self._base_dir / name) for name in files]  # an absolute name stays as it is
        probabilities = np.full((len(files), len(self._classifier.labels)), np.nan, dtype=np.float32)
        errors = [""] * len(files)
        for row, result in enumerate(self._classifier.classify_files(readable, batch_size=max(1, len(files)))):
            if result.prediction is None:
                errors[row] = result.error.problem if result.error else "unknown error"
            else:
                probabilities[row] = [result.prediction.probabilities[label] for label in self._classifier.labels]
        return {FILE_COLUMN: np.array(files, dtype=object), "probabilities": probabilities, "error": np.array(errors, dtype=object)}


def actor_arguments(model: Path, providers: str, column: str) -> dict[str, str]:
    """`BatchClassifier`'s arguments, made in the driver: the model's absolute path and the driver's working
    directory, which the actors read relative names from."""
    return {"model": str(model.resolve()), "providers": providers, "column": column, "base_dir": str(Path.cwd())}


def classify_on_ray(
    classifier: Classifier,
    model: Path,
    source: RayInput,
    batch_size: int = 32,
    workers: int | None = None,
    address: str | None = None,
    providers: str = "auto",
) -> Iterator[FileResult]:
    """Results for every file `source` names, in input order.

    `classifier` (the driver's own, already validated) turns each probability row into a `Prediction`.
    """
    with ray_connection(address):
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        if source.streamed_list is not None:
            # A read task that needs no CPU of its own: the actors may hold every CPU of a small machine.
            dataset, column = ray.data.read_text(str(source.streamed_list), encoding="utf-8-sig", num_cpus=0), TEXT_COLUMN
        else:
            files = image_files(source.inputs, source.list_file)
            dataset, column = ray.data.from_items([{FILE_COLUMN: str(path)} for path in files]), FILE_COLUMN
        results = dataset.map_batches(
            BatchClassifier,
            fn_constructor_kwargs=actor_arguments(model, providers, column),
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=actor_count(workers)),
            num_cpus=1,
            batch_format="numpy",
        )
        for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
            for name, row, error in zip(batch[FILE_COLUMN], batch["probabilities"], batch["error"]):
                if error:
                    yield FileResult(file=str(name), error=ImageError(name, str(error)))
                else:
                    yield FileResult(file=str(name), prediction=classifier.prediction_from(row, str(name)))
