"""The bottleneck phase's feature extractor: the backbone alone, exported to ONNX once, run in onnxruntime.

onnxruntime computes the same features as TensorFlow (checked when the file is made) but faster on a CPU
(see benchmarks/results/results.md), and it is the engine the exported classifier runs on, so the head
trains on exactly the features it will see in deployment. The ONNX file is cached beside the features it
produces, under the backbone's fingerprint, so it is converted once per backbone; a SHA-256 beside it
catches a damaged copy, which is then converted again.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import onnx

from runtime.session import SessionSettings
from train.atomic import atomic_output, file_sha256, write_atomically
from train.export import ExportError, convert
from train.feature_worker import FEATURES_OUTPUT, OnnxExtractor

EXTRACTOR_FILE = "extractor.onnx"
#: Largest allowed difference between TensorFlow and onnxruntime features, relative to their largest value.
PARITY_TOLERANCE = 1e-4


def onnx_extractor(extractor: keras.Model, directory: Path, settings: SessionSettings | None = None) -> OnnxExtractor:
    """The ONNX twin of the Keras `extractor`, converted and checked on first use, then read from `directory`."""
    path = directory / EXTRACTOR_FILE
    checksum = path.with_name(path.name + ".sha256")
    if not (path.is_file() and checksum.is_file() and file_sha256(path) == checksum.read_text().strip()):
        input_size = tuple(extractor.input_shape[1:3])
        proto = convert(extractor, input_size, lambda features: {FEATURES_OUTPUT: features})
        onnx.checker.check_model(proto, full_check=True)
        with atomic_output(path) as temporary:
            temporary.write_bytes(proto.SerializeToString())
            _check_parity(extractor, OnnxExtractor(temporary, settings), input_size, path)
            digest = file_sha256(temporary)
        write_atomically(checksum, digest.encode("ascii"))
    return OnnxExtractor(path, settings)



def _check_parity(extractor: keras.Model, twin: OnnxExtractor, input_size: tuple[int, ...], path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (4, *input_size, 3), dtype=np.uint8)
    expected = np.asarray(extractor(pixels, training=False))
    difference = float(np.abs(twin(pixels) - expected).max() / max(1.0, float(np.abs(expected).max())))
    if difference > PARITY_TOLERANCE:
        raise ExportError(f"{path}: onnxruntime features differ from TensorFlow's by {difference:.1e} (relative); not written")
