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

#: Prepended to every measured program: at exit it reports the process's own peak resident memory
#: (VmHWM is reset by exec, unlike the ru_maxrss a parent sees, which includes the parent's own memory).
PEAK_REPORTER = """
import atexit, sys
def _report_peak():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print(f"peak_rss_kb={peak}", file=sys.stderr)
atexit.register(_report_peak)
"""
CLASSIFY = """
import runpy, sys
sys.argv = ["classify", *sys.argv[1:3]]
runpy.run_module("runtime", run_name="__main__")
"""
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


def run_python(program: str, *args: str) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of a fresh Python process running `program` with `args`."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK_REPORTER + program, *args], capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"benchmark process failed: {done.stderr[-500:]}")
    peak_kb = int(done.stderr.rsplit("peak_rss_kb=", 1)[1].split()[0])
    return wall, peak_kb / 1024


def export_saved_model(model: keras.Model, folder: Path) -> Path:
    """The Keras model as a TensorFlow SavedModel (the plain-TensorFlow deployment format)."""
    model.export(str(folder), format="tf_saved_model", verbose=False)
    return folder


def measure_startup(onnx_path: Path, saved_model: Path, image: Path, size: int, repeats: int) -> dict[str, object]:
    """Median over `repeats` fresh processes of each measurement."""
    def median_run(program: str, *args: str) -> dict[str, float]:
        runs = [run_python(program, *args) for _ in range(repeats)]
        return {"seconds": statistics.median(r[0] for r in runs), "peak_rss_mib": statistics.median(r[1] for r in runs)}

    imports = [float(subprocess.run([sys.executable, "-c", IMPORT_RUNTIME], capture_output=True, text=True, check=True).stdout) for _ in range(repeats)]
    return {
        "classify_one_image": median_run(CLASSIFY, str(onnx_path), str(image)),
        "tensorflow_one_image": median_run(TENSORFLOW_BASELINE, str(saved_model), str(image), str(size)),
        "import_runtime_seconds": statistics.median(imports),
        "onnx_file_mib": onnx_path.stat().st_size / 2**20,
        "saved_model_mib": sum(f.stat().st_size for f in saved_model.rglob("*") if f.is_file()) / 2**20,
        "repeats": repeats,
    }
