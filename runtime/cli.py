"""`classify`: run an exported model on images and folders from the command line."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional, TypeVar

import typer

from runtime.classifier import Classifier, FileResult
from runtime.distributed import Engine, EngineError, RayInput, require_ray
from runtime.errors import ModelError, OutputError
from runtime.imaging import IMAGE_EXTENSIONS, image_files
from runtime.list_stream import is_standard_input
from runtime.output import make_folder_for
from runtime.session import OPTIMIZATION_LEVELS, SessionSettings

EXIT_IMAGE_FAILED = 1
#: The run could not do its job: the model, an output, the engine, or no images at all.
EXIT_CANNOT_RUN = 2
#: Ctrl-C (128 + SIGINT) and a reader that stopped early, e.g. `| head` (128 + SIGPIPE), as shells report them.
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
#: `--csv -`: the CSV goes to standard output.
STDOUT = "-"

app = typer.Typer(add_completion=False, help="Classify images with a model exported by train-model.")


def _readable_list(list_file: Optional[Path]) -> Optional[Path]:
    """The `--list` value, checked: `-` (standard input) or a readable file. (typer's own check cannot let `-`
    through for a Path option: it compares the Path with the string "-".)"""
    if list_file is None or is_standard_input(list_file):
        return list_file
    problem = "does not exist" if not list_file.exists() else "is a folder" if list_file.is_dir() else None
    if problem is None and not os.access(list_file, os.R_OK):
        problem = "is not readable"
    if problem:
        raise typer.BadParameter(f"file '{list_file}' {problem}.")
    return list_file


@app.command()
def classify(
    model: Path = typer.Argument(..., help="Model file written by train-model --export."),
    inputs: Optional[List[Path]] = typer.Argument(None, help="Image files and/or folders (searched recursively)."),
    list_file: Optional[Path] = typer.Option(
        None, "--list", callback=_readable_list,
        help="A text file naming one image per line (read as a stream); - reads the names from standard input.",
    ),
    top_k: int = typer.Option(1, "--top-k", min=1, help="Show K labels: the prediction (which follows the decision threshold), then the most probable others (--json lists them all)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write all results to this CSV file; - prints the CSV to stdout instead of the text lines."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Images per inference batch."),
    providers: str = typer.Option("auto", "--providers", help="auto, cpu, cuda, or onnxruntime provider names separated by commas."),
    threads: int = typer.Option(0, "--threads", min=0, help="onnxruntime intra-op threads; 0 = one per core."),
    optimization: str = typer.Option("all", "--optimization", help=f"Graph optimisation: {', '.join(OPTIMIZATION_LEVELS)}."),
    save_optimized: Optional[Path] = typer.Option(
        None, "--save-optimized", help="Also write the optimised graph here (loads faster on this kind of machine)."
    ),
    engine: Engine = typer.Option(Engine.local, "--engine", help="local (this process) or ray (Ray Data, an actor pool)."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Ray actors, one session each (default: one per cluster CPU)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Existing Ray cluster (e.g. auto); default: a local Ray instance."),
) -> None:
    """Print `Image: x.jpg | Predicted: CD (0.97)` per image; bad images go to stderr (exit code 1)."""
    _escape_unprintable_names()
    refuse_unused_options({"--workers": workers is not None, "--ray-address": ray_address is not None}, engine is Engine.ray, "--engine ray")
    try:
        settings = SessionSettings(intra_op_threads=threads, optimization=optimization, optimized_model_path=save_optimized)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="'--optimization'") from error
    csv_to_stdout = csv_path is not None and str(csv_path) == STDOUT
    if csv_to_stdout and as_json:
        raise typer.BadParameter("--csv - and --json would both print to stdout; choose one", param_hint="'--csv'")
    _refuse_outputs_over_inputs(model, [*(inputs or []), *([list_file] if list_file else [])], None if csv_to_stdout else csv_path, save_optimized)
    try:
        classifier = Classifier(model, providers=providers, settings=settings)
    except ValueError as error:  # an unknown --providers choice
        raise typer.BadParameter(str(error), param_hint="'--providers'") from error
    except (ModelError, OutputError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN)
    if not inputs and list_file is None:
        raise typer.BadParameter("give image files or folders, or --list FILE")
    typer.echo(f"Model: {model.name} | labels: {', '.join(classifier.labels)} | provider: {classifier.provider}", err=True)
    failures = seen = 0
    try:
        with _csv_writer(csv_path, classifier.labels) as write_row:
            for result in _results(engine, classifier, model, RayInput(inputs or [], list_file), batch_size, workers, ray_address, providers):
                seen += 1
                failures += result.error is not None
                write_row(result)  # first: a result on the screen is in the CSV too, even if Ctrl-C comes next
                _print_result(result, top_k, as_json, errors_only=csv_to_stdout)
    except (EngineError, OutputError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN)
    except KeyboardInterrupt:
        kept = f"; {csv_path} holds their rows" if csv_path and not csv_to_stdout else ""
        typer.echo(f"interrupted after {seen} image(s){kept}", err=True)
        raise typer.Exit(EXIT_INTERRUPTED)
    except BrokenPipeError:  # the reader of stdout is gone: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        raise typer.Exit(EXIT_BROKEN_PIPE)
    if not seen:  # an empty folder or list is most often the wrong one: a script must not take it for success
        named = ", ".join("standard input" if is_standard_input(path) else str(path) for path in [*(inputs or []), *([list_file] if list_file else [])])
        typer.echo(f"error: {named}: no images found (folders are searched for {', '.join(sorted(IMAGE_EXTENSIONS))})", err=True)
        raise typer.Exit(EXIT_CANNOT_RUN)
    if failures:
        typer.echo(f"{failures} image(s) could not be classified", err=True)
        raise typer.Exit(EXIT_IMAGE_FAILED)


def main() -> None:
    """Console-script entry point."""
    app()


def _results(
    engine: Engine, classifier: Classifier, model: Path, named: RayInput, batch_size: int, workers: Optional[int],
    ray_address: Optional[str], providers: str,
) -> Iterator[FileResult]:
    """Every image's result, in input order, from this process or from Ray actors (`EngineError` when Ray
    is missing or cannot be reached)."""
    if engine is Engine.local:
        yield from classifier.classify_files(image_files(named.inputs, named.list_file), batch_size=batch_size)
        return
    require_ray()
    from runtime.ray_classify import classify_on_ray  # Ray is an optional extra: import it only here

    yield from classify_on_ray(classifier, model, named, batch_size, workers, ray_address, providers)


def refuse_unused_options(given: dict[str, bool], used: bool, needed: str) -> None:
    """A usage error naming the options in `given` that were given (True) although, without `needed`
    (`used` False), they would change nothing: an option silently ignored hides a mistake."""
    unused = [option for option, was_given in given.items() if was_given and not used]
    if unused:
        raise typer.BadParameter(f"shapes only a run with {needed}, which is not asked for", param_hint=" / ".join(unused))


def _refuse_outputs_over_inputs(model: Path, inputs: List[Path], csv_path: Optional[Path], save_optimized: Optional[Path]) -> None:
    """`--csv` and `--save-optimized` must not replace what this run reads: the model, a named image or the
    `--list` file (an output named like an image could replace one inside a searched folder, so such names
    are refused too, and a CSV named like a model)."""
    if csv_path is not None and csv_path.suffix.lower() in {*IMAGE_EXTENSIONS, ".onnx"}:
        raise typer.BadParameter(f"{csv_path} is named like an image or a model, not a CSV file", param_hint="'--csv'")
    if save_optimized is not None and save_optimized.suffix.lower() in IMAGE_EXTENSIONS:
        raise typer.BadParameter(f"{save_optimized} is named like an image, not a model file", param_hint="'--save-optimized'")
    for option, path in (("--csv", csv_path), ("--save-optimized", save_optimized)):
        if path is not None and any(_same_file(path, source) for source in (model, *inputs)):
            raise typer.BadParameter(f"{path} is a file this run reads; writing there would replace it", param_hint=f"'{option}'")


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return False


def _escape_unprintable_names() -> None:
    """Print names stdout cannot encode (a latin-1 console, a file name that is not UTF-8) as backslash escapes.

    Without this one such name stops the whole run with a traceback; stderr does this by default.
    """
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")


def _print_result(result: FileResult, top_k: int, as_json: bool, errors_only: bool) -> None:
    """One result on stdout (text or JSON), its error on stderr; with `errors_only` (stdout holds the CSV) only the error."""
    if result.error is not None:
        if as_json:
            typer.echo(json.dumps({"file": result.file, "error": result.error.problem}))
        typer.echo(f"error: {result.error}", err=True)
        return
    if errors_only:
        return
    prediction = result.prediction
    assert prediction is not None
    if as_json:
        typer.echo(json.dumps(prediction.to_dict()))
        return
    ranked = " | ".join(f"{label} ({p:.2f})" for label, p in prediction.top_k(top_k))
    typer.echo(f"Image: {Path(result.file).name} | Predicted: {ranked}")


@contextmanager
def _csv_writer(path: Path | None, labels: list[str]) -> Iterator[Callable[[FileResult], None]]:
    """Yield a function writing one result per CSV row: to the file `path`, to stdout for `-` (Unix line
    ends; a reader that stops early raises `BrokenPipeError`), or nowhere without a path."""
    if path is None:
        yield lambda result: None
        return
    if str(path) == STDOUT:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(_csv_header(labels))
        yield lambda result: writer.writerow(_csv_row(result, labels))
        return
    make_folder_for(path)
    handle = _on_disk(path, lambda: open(path, "w", newline="", encoding="utf-8", errors="backslashreplace"))
    try:
        writer = csv.writer(handle)
        _on_disk(path, lambda: writer.writerow(_csv_header(labels)))

        yield lambda result: _on_disk(path, lambda: writer.writerow(_csv_row(result, labels)))
    finally:
        _on_disk(path, handle.close)  # flushes: a full disk shows here at the latest


def _csv_header(labels: list[str]) -> list[str]:
    return ["file", "label", "score", *[f"p_{label}" for label in labels], "error"]


def _csv_row(result: FileResult, labels: list[str]) -> list[str]:
    p = result.prediction
    if p is None:
        return [result.file, "", "", *[""] * len(labels), result.error.problem if result.error else ""]
    return [result.file, p.label, f"{p.score:.6f}", *[f"{p.probabilities[label]:.6f}" for label in labels], ""]


Written = TypeVar("Written")


def _on_disk(path: Path, action: Callable[[], Written]) -> Written:
    """Run one step of writing `path`; an `OSError` (a full disk, a lost mount) becomes its `OutputError`."""
    try:
        return action()
    except OSError as error:
        raise OutputError.from_os_error(path, error) from error


if __name__ == "__main__":
    main()
