"""Loading an exported ONNX model: open the session, choose execution providers, validate metadata."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import onnxruntime as ort

from runtime.errors import ModelError, first_line
from runtime.metadata import INPUT_NAME, LABEL_INDEX_OUTPUT, PROBABILITIES_OUTPUT, ModelMetadata
from runtime.output import prepare_output
from runtime.session import SessionSettings

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

Providers = Union[str, Sequence[str]]


def choose_providers(providers: Providers = "auto") -> list[str]:
    """Turn "auto", "cpu", "cuda" or explicit onnxruntime provider names (a list, or one string of names
    separated by commas, as the CLI takes them) into the list onnxruntime takes.

    "auto" takes CUDA when this onnxruntime build offers it, else the CPU. "cuda", or a provider name,
    that this build does not have is left out with a warning (the CPU when nothing is left); a build that
    has CUDA on a machine without a usable GPU is caught when the session starts (`load_model`).
    """
    available = ort.get_available_providers()
    if not isinstance(providers, str) or "ExecutionProvider" in providers:
        names = [name.strip() for name in providers.split(",")] if isinstance(providers, str) else list(providers)
        known = ort.get_all_providers()
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"unknown onnxruntime providers {unknown}: choose from {known}")
        usable = [name for name in names if name in available] or [CPU]
        missing = [name for name in names if name not in available]
        if missing:
            log.warning(f"warning: this onnxruntime build has no {', '.join(missing)}; using {', '.join(usable)}")
        return usable
    choice = providers.lower()
    if choice == "cpu":
        return [CPU]
    if choice in ("auto", "cuda"):
        if CUDA in available:
            return [CUDA, CPU]
        if choice == "cuda":
            log.warning("warning: CUDA was requested but this onnxruntime build has no CUDA provider; using the CPU")
        return [CPU]
    raise ValueError(f"unknown providers {providers!r}: use auto, cpu, cuda or onnxruntime provider names separated by commas (e.g. {CUDA},{CPU})")


@dataclass(frozen=True)
class LoadedModel:
    """An onnxruntime session with the toolkit metadata of its model."""

    path: Path
    session: ort.InferenceSession
    metadata: ModelMetadata

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually uses first."""
        return self.session.get_providers()[0]


def load_model(path: str | Path, providers: Providers = "auto", settings: SessionSettings | None = None) -> LoadedModel:
    """Open `path` as an exported classifier; raise `ModelError` with a one-line reason otherwise.

    An unknown `providers` choice raises `ValueError`; a `settings.optimized_model_path` that cannot be
    written (its folder cannot be made or takes no files, or a folder has its name) raises `OutputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(path, "a folder, not a model file" if path.is_dir() else "model file not found")
    settings = settings or SessionSettings()
    chosen = choose_providers(providers)  # a bad choice is the caller's ValueError, not the model's fault
    if settings.optimized_model_path is not None:
        prepare_output(Path(settings.optimized_model_path))
    try:
        session = ort.InferenceSession(str(path), sess_options=settings.options(), providers=chosen)
    except Exception as error:  # onnxruntime raises its own non-exported exception types
        raise ModelError(path, f"not a loadable ONNX model ({first_line(error)})") from error
    not_started = [name for name in chosen if name not in session.get_providers()]
    if not_started:
        log.warning(f"warning: {', '.join(not_started)} could not be started (onnxruntime says why); using {session.get_providers()[0]}")
    metadata = ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, str(path))
    _check_signature(session, metadata, path)
    return LoadedModel(path=path, session=session, metadata=metadata)


def _check_signature(session: ort.InferenceSession, metadata: ModelMetadata, path: Path) -> None:
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise ModelError(path, f"model must have one input named {INPUT_NAME!r}")
    if inputs[0].type != "tensor(uint8)":
        raise ModelError(path, f"model input must be uint8, found {inputs[0].type}")
    shape = inputs[0].shape
    if len(shape) != 4 or list(shape[1:]) != [metadata.input_height, metadata.input_width, 3]:
        raise ModelError(
            path,
            f"model input shape {shape} disagrees with its metadata size "
            f"{metadata.input_height}x{metadata.input_width}x3",
        )
    outputs = {output.name: output for output in session.get_outputs()}
    missing = {PROBABILITIES_OUTPUT, LABEL_INDEX_OUTPUT} - set(outputs)
    if missing:
        raise ModelError(path, f"model lacks the output(s) {sorted(missing)}")
    classes = outputs[PROBABILITIES_OUTPUT].shape[-1] if outputs[PROBABILITIES_OUTPUT].shape else None
    if isinstance(classes, int) and classes != len(metadata.labels):
        raise ModelError(path, f"model outputs {classes} class probabilities but its metadata names {len(metadata.labels)} labels")
