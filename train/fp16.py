"""fp16 version of an exported classifier, for GPUs: weights and arithmetic in half precision.

The uint8 image input and the float32 `probabilities` output stay as they are, so the runtime and any
other client use the file exactly like the fp32 one. On a CPU onnxruntime runs it by casting back to
float32 (correct, not faster); the point is half the file and GPU tensor cores.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnxruntime.transformers.float16 import convert_float_to_float16


def convert_fp16(source: Path, target: Path) -> None:
    """Write the fp16 version of the ONNX classifier `source` to `target` (metadata kept)."""
    half = convert_float_to_float16(onnx.load(source), keep_io_types=True)
    onnx.checker.check_model(half)
    onnx.save(half, target)
