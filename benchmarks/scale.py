"""`python -m benchmarks --scale`: the scale-out engines side by side on the Özgenel subset (2,000 images).

1. Bottleneck phase (MobileNetV2, bundled weights, 224 px, the default 8 views): this process vs 2 local
   worker processes vs local Ray with 2 actors, each on an empty cache, with the machine's CPU
   utilisation over the run (read from /proc/stat: the ideal speed-up on 2 cores is < 2x, and one
   process already runs onnxruntime on both cores). Ray is timed twice: already running (as on a
   cluster) and including the start of a local instance.
2. `classify` of a list file of 2,000 and 20,000 paths (the subset repeated), locally and with
   `--engine ray`, each as its own process: images/s and the driver's peak memory, which must stay flat
   as the input grows. The classifier is a small MobileNetV2 (96 px, 1 view) trained on the same subset,
   so 20,000 images take about a minute; model size does not change what the driver holds.

Writes DIR/scale.json (every figure, the machine, a `targets` list) and DIR/scale.md.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from benchmarks.accuracy import DATASETS
from benchmarks.environment import environment
from benchmarks.report import table
from benchmarks.suite import REPO, _target
from runtime.distributed import Engine, ray_connection
from runtime.imaging import find_images
from train.backbones import get_backbone
from train.bottleneck import compute_bottlenecks
from train.cache import BottleneckCache
from train.engines import EngineConfig, WorkerSpec
from train.extractor import EXTRACTOR_FILE, onnx_extractor
from train.pipeline import TrainConfig, run
from train.views import symmetry_views

DATA = DATASETS["ozgenel-crack"]
ENGINES = {
    "this process": EngineConfig(),
    "2 worker processes": EngineConfig(workers=2),
    "local Ray, 2 actors (Ray already running)": EngineConfig(engine=Engine.ray, workers=2),
    "local Ray, 2 actors, including Ray start": EngineConfig(engine=Engine.ray, workers=2),
}
RAY_RUNNING = "local Ray, 2 actors (Ray already running)"
PATH_COUNTS = (2_000, 20_000)
#: The driver's peak memory may grow by at most this share when the input grows tenfold.
FLAT_MEMORY_GROWTH = 0.10


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def timed_with_cpu(call: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, machine CPU utilisation in [0, 1]) of `call()`."""
    busy_before, total_before = cpu_ticks()
    started = time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    busy_after, total_after = cpu_ticks()
    return seconds, (busy_after - busy_before) / max(1, total_after - total_before)


def measure_bottleneck_engines(paths: list[Path], scratch: Path, log: Callable[[str], None]) -> list[dict[str, object]]:
    """Cold bottleneck phase per engine: images/s, CPU utilisation, speed relative to this process."""
    backbone = get_backbone("mobilenet_v2", "bundled")
    extractor = backbone.build_extractor()
    first = BottleneckCache(scratch / "convert", backbone)
    extract = onnx_extractor(extractor, first.directory)  # converted once, copied into every cache below
    rows = []
    for name, engine in ENGINES.items():
        log(f"bottleneck phase, {name}: {len(paths)} images")
        cache = BottleneckCache(scratch / name, backbone)
        for file in first.directory.glob(f"{EXTRACTOR_FILE}*"):
            shutil.copy(file, cache.directory / file.name)
        spec = WorkerSpec(cache.directory / EXTRACTOR_FILE, backbone.input_size, tuple(symmetry_views(TrainConfig.views, backbone.input_size)))
        quiet = Console(file=io.StringIO())
        with ray_connection(None) if name == RAY_RUNNING else nullcontext():
            seconds, utilisation = timed_with_cpu(lambda: compute_bottlenecks(paths, spec, cache, extract, console=quiet, engine=engine))
        rows.append({"engine": name, "images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds, "cpu_utilisation": utilisation})
    for row in rows:
        row["speed_vs_this_process"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def measure_classify_memory(model: Path, paths: list[Path], scratch: Path, log: Callable[[str], None]) -> list[dict[str, object]]:
    """`classify --list` as its own process per (engine, path count): images/s and the driver's peak RSS."""
    rows = []
    for count in PATH_COUNTS:
        listing = scratch / f"paths-{count}.txt"
        listing.write_text("".join(f"{paths[index % len(paths)]}\n" for index in range(count)), encoding="utf-8")
        for engine in (Engine.local, Engine.ray):
            log(f"classify --engine {engine.value}: {count} paths")
            arguments = [str(model), "--list", str(listing), "--csv", str(scratch / "out.csv"), "--engine", engine.value]
            if engine is Engine.ray:
                arguments += ["--workers", "2"]
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", _DRIVER, *arguments], capture_output=True, text=True, cwd=REPO)
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"classify failed: {done.stderr[-2000:]}")
            peak_kib = int(done.stderr.rsplit("DRIVER_MAX_RSS_KIB ", 1)[1].split()[0])
            rows.append({"engine": engine.value, "paths": count, "seconds": seconds, "images_per_s": count / seconds, "driver_peak_mib": peak_kib / 1024})
    return rows


#: Runs `classify` in this interpreter and prints the process's peak RSS when it exits.
#: (VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.)
_DRIVER = """
import atexit, sys
def peak():
    line = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print("DRIVER_MAX_RSS_KIB", line.split()[1], file=sys.stderr)
atexit.register(peak)
sys.argv = ["classify", *sys.argv[1:]]
from runtime.cli import main
main()
"""


def scale_targets(result: dict[str, object]) -> list[dict[str, object]]:
    """The issue's scale rows: Ray's speed against one process, and a flat driver memory."""
    by_engine = {row["engine"]: row for row in result["bottleneck"]}
    found = [
        _target("bottleneck phase: local Ray (2 actors, running) / this process, images/s (ideal < 2x on 2 cores)", by_engine[RAY_RUNNING]["speed_vs_this_process"], 1.0),
        _target("bottleneck phase: 2 worker processes / this process, images/s", by_engine["2 worker processes"]["speed_vs_this_process"], 1.0),
    ]
    for engine in (Engine.local, Engine.ray):
        small, large = (next(row for row in result["classify"] if (row["engine"], row["paths"]) == (engine.value, count)) for count in PATH_COUNTS)
        growth = large["driver_peak_mib"] / small["driver_peak_mib"] - 1
        found.append(_target(
            f"classify --engine {engine.value}: driver peak memory growth from {PATH_COUNTS[0]:,} to {PATH_COUNTS[1]:,} paths",
            growth, FLAT_MEMORY_GROWTH, higher_is_better=False, inclusive=True,
        ))
    return found


def run_scale(log: Callable[[str], None] = print) -> dict[str, object]:
    """Every scale measurement of one run, plus its targets."""
    if not DATA.is_dir():
        raise SystemExit(f"{DATA}: the Özgenel subset is needed for --scale (see ../shared/data/README)")
    paths = find_images(DATA)
    result: dict[str, object] = {"environment": environment(), "data": str(DATA), "images": len(paths)}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        result["bottleneck"] = measure_bottleneck_engines(paths, folder, log)
        log("training the small classifier for the classify runs (96 px, 1 view)")
        model = folder / "small.onnx"
        run(TrainConfig(data_dir=DATA, export=model, image_size=(96, 96), views=1, workspace=folder / "small"), Console(file=io.StringIO()))
        result["classify"] = measure_classify_memory(model, paths, folder, log)
    result["targets"] = scale_targets(result)
    return result


def write_scale(result: dict[str, object], folder: Path) -> list[Path]:
    """scale.json and scale.md in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "scale.json", folder / "scale.md"]
    paths[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    env = result["environment"]
    lines = [
        "# Scale-out results", "",
        f"Command: `{result.get('command', 'python -m benchmarks --scale')}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores; Python {env['python']}; date {env['date']}  ",
        f"Data: {result['data']} ({result['images']} images)", "", "## Targets", "",
        *table(["target", "measured", "goal", "met"], [
            [t["name"], t["measured"], f"{t['comparison']} {t['goal']}", "yes" if t["met"] else "**no**"] for t in result["targets"]
        ]),
        "", "## Bottleneck phase (MobileNetV2 224 px, 8 views, empty cache; CPU = whole machine, /proc/stat)", "",
        *table(["engine", "images", "seconds", "images/s", "vs this process", "CPU utilisation"], [
            [r["engine"], r["images"], r["seconds"], r["images_per_s"], r["speed_vs_this_process"], f"{r['cpu_utilisation']:.0%}"] for r in result["bottleneck"]
        ]),
        "", "## classify --list (MobileNetV2 96 px, 1 view), one process per row", "",
        *table(["engine", "paths", "seconds (incl. start)", "images/s", "driver peak MiB"], [
            [r["engine"], r["paths"], r["seconds"], r["images_per_s"], r["driver_peak_mib"]] for r in result["classify"]
        ]),
        "",
    ]
    paths[1].write_text("\n".join(lines), encoding="utf-8")
    return paths
