"""retrain-onnx training: transfer learning on cached bottleneck features, exported as one ONNX file.

Needs the `[train]` extra (TensorFlow, tf2onnx). Image decoding comes from `runtime`, so training and
deployment see the same pixels.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Sequence

#: Modules of the `[train]` extra that `quantize-model` and `evaluate-model` use (they never load TensorFlow).
ONNX_TOOLS = ("onnx", "sklearn", "matplotlib")
#: ...and what `train-model` uses on top.
TRAINING = ("tensorflow", "tf2onnx", *ONNX_TOOLS)


def require_train_extra(command: str, modules: Sequence[str]) -> None:
    """Exit with one line naming the missing modules when `command` runs without the `[train]` extra
    (`pip install .` installs every command, but only `classify` works without it)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        sys.exit(f"error: {command} needs {', '.join(missing)}; install the train extra from the checkout: pip install -e '.[train]'")
