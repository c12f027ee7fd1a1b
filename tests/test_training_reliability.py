"""Interrupted and concurrent training runs lose nothing: Ctrl-C resumes from the cache, two processes
share one cache without damaging it, a file rewritten while its features are computed is never cached
under its old bytes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from train.atomic import file_sha256  # noqa: E402
from train.backbones import get_backbone  # noqa: E402
from train.bottleneck import compute_bottlenecks  # noqa: E402
from train.cache import BottleneckCache  # noqa: E402
from train.data import LabeledImage  # noqa: E402
from train.engines import WorkerSpec  # noqa: E402
from train.views import View  # noqa: E402

from conftest import ctrl_c_as_from_a_terminal  # noqa: E402

pytestmark = pytest.mark.slow

SMALL_MODEL = ["--weights", "none", "--image-size", "64"]


def command(data: Path, workspace: Path, model: Path, *extra: str) -> list[str]:
    """The `train-model` command line for a run with random weights (fast, no weight file needed)."""
    return [sys.executable, "-m", "train", str(data), "--export", str(model), "--workspace", str(workspace), *extra]


def cache_entries(workspace: Path) -> list[Path]:
    return list((workspace / "bottlenecks").rglob("*.features"))


@pytest.mark.parametrize("tool", ["train-model", "quantize-model"])
def test_ctrl_c_while_a_command_starts_is_one_line_not_a_traceback(tool: str, assets_dir: Path, tmp_path: Path) -> None:
    arguments = [assets_dir, "--export", tmp_path / "m.onnx"] if tool == "train-model" else [tmp_path / "m.onnx", "--calibrate", assets_dir]
    process = subprocess.Popen([str(Path(sys.executable).parent / tool), *map(str, arguments)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_from_a_terminal)
    time.sleep(0.3)  # its imports take longer than this (TensorFlow, onnx, scikit-learn)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-2000:]
    assert stderr.strip().splitlines()[-1].startswith("interrupted: "), stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_callback_run_by_an_import_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    """A Ctrl-C landing in code Python runs for the import machinery (a module lock's weakref callback; here a
    finaliser) cannot propagate; Python would print "Exception ignored in" with a traceback. CI saw that once."""
    (tmp_path / "interrupted_in_a_finaliser.py").write_text(
        "import os, signal\n"
        "class Finalised:\n"
        "    def __del__(self):\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        sum(range(10))  # the pending signal's handler runs here, inside the finaliser\n"
        "Finalised()\n"
        "def main():\n"
        "    print('ran')\n"
    )
    code = f"import sys; sys.path.insert(0, {str(tmp_path)!r}); from train.entry_points import _run; _run('interrupted_in_a_finaliser')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          preexec_fn=ctrl_c_as_from_a_terminal)
    assert (done.returncode, done.stdout) == (130, ""), done.stderr
    assert done.stderr == "interrupted: while starting, before anything was read or written\n"


def test_ctrl_c_during_bottlenecks_keeps_finished_features_and_the_next_run_resumes(assets_dir: Path, tmp_path: Path) -> None:
    workspace, model = tmp_path / "cache", tmp_path / "m.onnx"
    run = command(assets_dir, workspace, model, "--weights", "none", "--image-size", "160")
    process = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_from_a_terminal)
    deadline = time.monotonic() + 300
    while len(cache_entries(workspace)) < 16 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    running_when_interrupted = process.poll() is None
    masks = _signal_masks(process.pid)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    seen = f"running when interrupted: {running_when_interrupted}; {masks}; stdout: {stdout[-1500:]}; stderr: {stderr[-1500:]}"
    assert process.returncode == 130, seen
    assert stderr.strip().splitlines()[-1].startswith("interrupted: finished work is kept")
    assert "Traceback" not in stderr and not model.exists()
    kept = cache_entries(workspace)
    assert 16 <= len(kept) < 400 * 8 and not list(workspace.rglob("*.tmp"))
    cache = BottleneckCache(workspace, get_backbone("mobilenet_v2", "none", (160, 160)))
    keys = [entry.name.removesuffix(".features").partition(".") for entry in kept]
    assert all(cache.get(content_hash, view) is not None for content_hash, _, view in keys)  # every kept entry is whole

    resumed = subprocess.run(run, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads(model.with_name("m.report.json").read_text())
    reused = report["bottlenecks"]["reused"]
    assert reused >= 1 and reused + report["bottlenecks"]["computed"] == 400
    assert f"Bottlenecks: {reused} cached, {400 - reused} to compute" in resumed.stdout


def test_a_killed_worker_process_gives_one_line_and_the_next_run_resumes(assets_dir: Path, tmp_path: Path) -> None:
    workspace, model = tmp_path / "cache", tmp_path / "m.onnx"
    run = command(assets_dir, workspace, model, "--weights", "none", "--image-size", "160", "--workers", "2")
    process = subprocess.Popen(run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(cache_entries(workspace)) < 16 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [pid for pid in _children(process.pid) if "spawn_main" in _command_line(pid)]
    assert workers, "no worker process found"
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("error: a bottleneck worker died")
    assert "Traceback" not in stderr and not model.exists()
    resumed = subprocess.run(run, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(model.with_name("m.report.json").read_text())["bottlenecks"]["reused"] >= 1


def _signal_masks(pid: int) -> str:
    """Whether the process ignores, blocks or catches SIGINT (Linux /proc; for the Ctrl-C test's failure message)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "signal masks unknown"
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigIgn", "SigBlk", "SigCgt"))}
    return "SIGINT " + ", ".join(f"{name} {bool(mask & (1 << (signal.SIGINT - 1)))}" for name, mask in masks.items())


def _children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()]


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_two_processes_sharing_one_cache_do_not_corrupt_it(small_dataset: Path, tmp_path: Path) -> None:
    workspace = tmp_path / "shared"
    runs = [
        subprocess.Popen(
            command(small_dataset, workspace, tmp_path / f"m{index}.onnx", *SMALL_MODEL, "--split", "50,25,25"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for index in range(2)
    ]
    for process in runs:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    reports = [json.loads((tmp_path / f"m{index}.report.json").read_text()) for index in range(2)]
    assert reports[0]["test"]["predictions"] == reports[1]["test"]["predictions"]
    assert not list(workspace.rglob("*.tmp"))
    third = subprocess.run(command(small_dataset, workspace, tmp_path / "m2.onnx", *SMALL_MODEL, "--split", "50,25,25"), capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "all 40 found in cache, nothing computed" in third.stdout


def test_a_file_rewritten_while_its_features_are_computed_is_skipped_not_cached_under_its_old_bytes(small_dataset: Path, tmp_path: Path) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (32, 32), seed=0)
    extractor = backbone.build_extractor()
    cache = BottleneckCache(tmp_path, backbone)
    paths = sorted(small_dataset.glob("*/*.jpg"))[:4]
    rewritten, other = paths[0], sorted(small_dataset.glob("UD/*.jpg"))[-1]
    old_hash = file_sha256(rewritten)
    copy = small_dataset / "CD" / "copy-of-first.jpg"
    copy.write_bytes(rewritten.read_bytes())

    vanished = paths[3]

    def extract_while_the_file_is_rewritten(pixels: np.ndarray) -> np.ndarray:
        rewritten.write_bytes(other.read_bytes())  # another program replaces one photo and deletes another mid-run
        vanished.unlink(missing_ok=True)
        return extractor.predict_on_batch(pixels)

    spec = WorkerSpec(None, (32, 32), (View(),))
    first = compute_bottlenecks([*paths, copy], spec, cache, extract_while_the_file_is_rewritten, batch_size=8)
    messages = {failure.source: str(failure) for failure in first.failures}
    assert set(messages) == {str(rewritten), str(copy), str(vanished)} and first.computed == 2
    assert messages[str(rewritten)] == f"{rewritten}: changed while its features were computed; run again to include it"
    assert messages[str(vanished)] == f"{vanished}: disappeared while its features were computed; run again to include it"
    assert rewritten not in first.features and cache.get(old_hash) is None
    again = compute_bottlenecks([*paths[:3], copy], spec, cache, extractor.predict_on_batch, batch_size=8)
    assert not again.failures and (again.computed, again.reused) == (2, 2)  # the new photo and the copy (old bytes, never cached)


def test_a_corrupt_file_is_noted_for_the_next_run_but_a_passing_read_error_is_not(small_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runtime.imaging as imaging

    backbone = get_backbone("mobilenet_v2", "none", (32, 32), seed=0)
    extractor = backbone.build_extractor()
    cache = BottleneckCache(tmp_path, backbone)
    flaky, healthy = sorted(small_dataset.glob("CD/*.jpg"))[:2]
    corrupt = small_dataset / "CD" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    read, failed = imaging._read, []

    def disk_fails_once(source: object, name: str) -> bytes:  # the disk, not our code: one EIO on one file
        if str(source) == str(flaky) and not failed:
            failed.append(source)
            raise OSError(errno.EIO, "Input/output error")
        return read(source, name)

    monkeypatch.setattr(imaging, "_read", disk_fails_once)
    spec = WorkerSpec(None, (32, 32), (View(),))
    first = compute_bottlenecks([flaky, healthy, corrupt], spec, cache, extractor.predict_on_batch)
    assert {failure.source for failure in first.failures} == {str(flaky), str(corrupt)} and first.computed == 1
    again = compute_bottlenecks([flaky, healthy, corrupt], spec, cache, extractor.predict_on_batch)
    assert (again.computed, again.reused, again.known_unreadable) == (1, 1, 1)  # the flaky file is tried again
    assert [str(failure) for failure in again.failures] == [str(first.failures[-1])]  # the corrupt one, same message


def test_an_image_rewritten_during_the_augmented_pass_is_left_out_of_training_not_misaligned(small_dataset: Path, tmp_path: Path) -> None:
    from train.augment import augmented_views
    from train.pipeline import _with_augmented

    backbone = get_backbone("mobilenet_v2", "none", (32, 32), seed=0)
    extractor = backbone.build_extractor()
    cache = BottleneckCache(tmp_path, backbone)
    paths = sorted(small_dataset.glob("CD/*.jpg"))[:3] + sorted(small_dataset.glob("UD/*.jpg"))[:3]
    plain = compute_bottlenecks(paths, WorkerSpec(None, (32, 32), (View(),)), cache, extractor.predict_on_batch)
    rewritten = paths[1]

    def extract_while_the_file_is_rewritten(pixels: np.ndarray) -> np.ndarray:
        rewritten.write_bytes(paths[-1].read_bytes())
        return extractor.predict_on_batch(pixels)

    augmented = compute_bottlenecks(
        paths, WorkerSpec(None, (32, 32), tuple(augmented_views(2, seed=0))), cache, extract_while_the_file_is_rewritten
    )
    assert [failure.source for failure in augmented.failures] == [str(rewritten)]
    images = [LabeledImage(path, f"{path.parent.name}/{path.name}", path.parent.name, "train") for path in paths]
    features = np.stack([plain.features[path] for path in paths])
    x, y, kept = _with_augmented(features, np.array([0, 0, 0, 1, 1, 1]), images, augmented.features)
    assert [image.path for image in kept] == [path for path in paths if path != rewritten] and y.tolist() == [0, 0, 1, 1, 1]
    assert x.shape == (5, 3, backbone.spec.feature_dim)
    np.testing.assert_array_equal(x[1, 1:], augmented.features[paths[2]])  # each row holds its own image's views
