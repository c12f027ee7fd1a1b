"""Cold start: a fresh process's wall time to its first prediction and its peak memory, for `classify`
and for a TensorFlow baseline; the import time of `runtime`; model file sizes."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import keras

TENSORFLOW_BASELINE = """
import sys
import numpy as np, tensorflow as tf
from PIL import Image
model = tf.saved_model.load(sys.argv[1])
size = int(sys.argv[3])
pixels = np.asarray(Image.open(sys.argv[2]).convert("RGB").resize((size, size), Image.BILINEAR))[None]
print(np.asarray(model.serve(tf.constant(pixels))).argmax())
"""
IMPORT_RUNTIME = "import time; t = time.perf_counter(); import runtime; print(time.perf_counter() - t)"


def run_process(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of `command` run to completion; raises if it fails."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command[:3]} failed: {process.stderr.read().decode()[-500:]}")
    process.stderr.close()
    return wall, usage.ru_maxrss / 1024


def export_saved_model(model: keras.Model, folder: Path) -> Path:
    """The Keras model as a TensorFlow SavedModel (the plain-TensorFlow deployment format)."""
    model.export(str(folder), format="tf_saved_model", verbose=False)
    return folder


def measure_startup(onnx_path: Path, saved_model: Path, image: Path, size: int, repeats: int) -> dict[str, object]:
    """Median over `repeats` fresh processes of each measurement."""
    def median_run(command: list[str]) -> dict[str, float]:
        runs = [run_process(command) for _ in range(repeats)]
        return {"seconds": statistics.median(r[0] for r in runs), "peak_rss_mib": statistics.median(r[1] for r in runs)}

    imports = [float(subprocess.run([sys.executable, "-c", IMPORT_RUNTIME], capture_output=True, text=True, check=True).stdout) for _ in range(repeats)]
    return {
        "classify_one_image": median_run([sys.executable, "-m", "runtime", str(onnx_path), str(image)]),
        "tensorflow_one_image": median_run([sys.executable, "-c", TENSORFLOW_BASELINE, str(saved_model), str(image), str(size)]),
        "import_runtime_seconds": statistics.median(imports),
        "onnx_file_mib": onnx_path.stat().st_size / 2**20,
        "saved_model_mib": sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file()) / 2**20,
        "repeats": repeats,
    }
