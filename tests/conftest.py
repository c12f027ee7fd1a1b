"""Shared fixtures: real images from the bundled sample and small real models."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "assets"
COLOR_LABELS = ["blue", "green", "red"]
COLOR_SIZE = 32


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    """The bundled SDNET2018 sample (CD/ and UD/)."""
    return ASSETS


@pytest.fixture()
def small_dataset(tmp_path: Path) -> Path:
    """A copy of 20 real images per class from the bundled sample."""
    for label in ("CD", "UD"):
        (tmp_path / label).mkdir()
        for path in sorted((ASSETS / label).glob("*.jpg"))[:20]:
            shutil.copy(path, tmp_path / label / path.name)
    return tmp_path


def without_permission_override() -> list[str]:
    """The command prefix under which a `chmod 0` folder cannot be read: none for a normal user; as root,
    `setpriv` dropping the capabilities that override file permissions (the test is skipped without it)."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: a folder cannot be made unreadable")
    return ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


def ctrl_c_as_from_a_terminal() -> None:
    """`preexec_fn` for a child a test sends Ctrl-C: SIGINT not ignored. A child inherits an ignored SIGINT
    and Python keeps it (so Ctrl-C would do nothing): pytest run in the background by a script (`make test &`)
    ignores it, and earlier tests can leave this process ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def solid_image(path: Path, color: tuple[int, int, int], size: int = 48) -> Path:
    """Write a JPEG of one colour with a little noise."""
    rng = np.random.default_rng(abs(hash((path.name, color))) % 2**32)
    pixels = np.clip(np.array(color)[None, None, :] + rng.integers(-10, 10, (size, size, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    return path


def mean_colour_model(path: Path, labels: list[str], weights: np.ndarray, threshold: object = None) -> Path:
    """Write a real ONNX classifier with this toolkit's metadata: mean RGB in [0, 255] -> linear layer
    (`weights`, one row per label) -> softmax, argmax. `threshold` is a `runtime.metadata.DecisionThreshold`.

    Built with onnx.helper (no TensorFlow).
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from runtime.metadata import ModelMetadata

    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["pixels"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("MatMul", ["mean", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["probabilities"], ["label_index"], axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "color",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", COLOR_SIZE, COLOR_SIZE, 3])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(labels)]),
            helper.make_tensor_value_info("label_index", TensorProto.INT64, ["batch"]),
        ],
        initializer=[helper.make_tensor("weights", TensorProto.FLOAT, [3, len(labels)], weights.T.flatten().tolist())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    metadata = ModelMetadata(
        labels=labels,
        input_height=COLOR_SIZE,
        input_width=COLOR_SIZE,
        resize_method="pillow-bilinear",
        backbone="mean-colour",
        weights="fixed",
        preprocessing="none",
        toolkit_version="test",
        trained_at="2026-01-01T00:00:00+00:00",
        test_metrics={"accuracy": 1.0},
        decision_threshold=threshold,
    )
    for key, value in metadata.to_props().items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def color_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ONNX model that tells red, green and blue images apart (logits favour the dominant channel)."""
    weights = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=np.float32) * 0.1  # label order blue, green, red
    return mean_colour_model(tmp_path_factory.mktemp("color") / "color.onnx", COLOR_LABELS, weights)


@pytest.fixture(scope="session")
def threshold_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-class (blue, red) model whose decision threshold predicts blue from a probability of 0.1 on:
    a red image is then "blue" (about 0.13) although red is the more probable class (about 0.87)."""
    from runtime.metadata import DecisionThreshold

    weights = np.array([[0, 0, 1], [1, 0, 0]], dtype=np.float32) * 0.01
    threshold = DecisionThreshold("blue", 0.1, "test rule")
    return mean_colour_model(tmp_path_factory.mktemp("threshold") / "threshold.onnx", ["blue", "red"], weights, threshold)


@pytest.fixture()
def color_images(tmp_path: Path) -> dict[str, Path]:
    """One real JPEG per colour label."""
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}
    return {label: solid_image(tmp_path / f"{label}.jpg", rgb) for label, rgb in colors.items()}


def unboxed(text: str) -> str:
    """`text` with typer's usage-error box frame and line breaks taken out, words joined by single spaces."""
    return " ".join(text.replace("│", " ").split())


#: What `--engine ray` says when Ray is not installed.
NEEDS_RAY = "error: --engine ray needs Ray: pip install ray (or the project's ray extra, from the checkout: pip install -e '.[ray]')"


def run_without_ray(entry_point: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run a console script's entry point (`runtime.cli:main`) with `args` in a Python where Ray looks
    uninstalled (its module spec is hidden), as on a machine without the ray extra."""
    module, function = entry_point.split(":")
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *rest: None if name == 'ray' else real(name, *rest)\n"
        f"sys.argv = ['{function}', *{[str(arg) for arg in args]!r}]\n"
        f"from {module} import {function}\n"
        f"{function}()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
