"""The `classify` console script, run as a user runs it (a subprocess) or in-process with typer's CliRunner."""

from __future__ import annotations

import csv
import ctypes
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from runtime.cli import app

from conftest import COLOR_LABELS, NEEDS_RAY, ctrl_c_as_from_a_terminal, run_without_ray, solid_image, unboxed, without_permission_override

CLASSIFY = [sys.executable, "-m", "runtime"]
RGB = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (20, 40, 210)}


def run_classify(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLASSIFY, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def invoke_classify(*args: object) -> Result:
    """Run `classify` in-process; typer's CliRunner keeps stdout and stderr apart (`result.stderr`)."""
    return CliRunner().invoke(app, [str(arg) for arg in args])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_prints_one_line_per_image(color_model: Path, color_images: dict[str, Path]) -> None:
    done = run_classify(color_model, color_images["red"], color_images["green"])
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Image: red.jpg | Predicted: red (")
    assert lines[1].startswith("Image: green.jpg | Predicted: green (")
    assert "provider: CPUExecutionProvider" in done.stderr


def test_folder_json_top_k_and_csv(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    folder = color_images["red"].parent
    (folder / "notes.txt").write_text("ignored")
    table = tmp_path / "out.csv"
    done = run_classify(color_model, folder, "--json", "--csv", table, "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert {Path(row["file"]).name: row["label"] for row in rows} == {"blue.jpg": "blue", "green.jpg": "green", "red.jpg": "red"}
    assert set(rows[0]["probabilities"]) == set(COLOR_LABELS)
    with table.open() as handle:
        written = list(csv.DictReader(handle))
    assert [row["label"] for row in written] == [row["label"] for row in rows]
    top = run_classify(color_model, color_images["blue"], "--top-k", "3")
    assert top.stdout.count("(") == 3


def test_csv_dash_prints_the_csv_to_stdout_and_errors_to_stderr(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    done = run_classify(color_model, color_images["red"], broken, "--csv", "-", cwd=tmp_path)
    assert done.returncode == 1
    rows = list(csv.DictReader(io.StringIO(done.stdout)))  # nothing but the CSV on stdout
    assert [(Path(row["file"]).name, row["label"], bool(row["error"])) for row in rows] == [("red.jpg", "red", False), ("broken.jpg", "", True)]
    assert f"error: {broken}" in done.stderr and not (tmp_path / "-").exists()
    both = run_classify(color_model, color_images["red"], "--csv", "-", "--json")
    assert both.returncode == 2 and "both print to stdout" in both.stderr


def test_text_output_follows_the_decision_threshold_like_csv_and_json(threshold_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "out.csv"
    text = run_classify(threshold_model, color_images["red"], "--top-k", "2", "--csv", table)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("Image: red.jpg | Predicted: blue (0.1")  # blue's 0.13 passes its 0.1 threshold
    assert "| red (0.8" in text.stdout
    assert read_csv(table)[0]["label"] == "blue"
    as_json = json.loads(run_classify(threshold_model, color_images["red"], "--json").stdout)
    assert as_json["label"] == "blue" and as_json["probabilities"]["red"] > 0.8


def test_csv_that_cannot_be_written_stops_at_once_in_one_line(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("not a folder")
    for target, problem in ((tmp_path / "a file" / "out.csv", f"File exists: {tmp_path / 'a file'}"), (tmp_path, "Is a directory")):
        done = run_classify(color_model, color_images["red"], "--csv", target)
        assert done.returncode == 2 and "Predicted" not in done.stdout
        assert done.stderr.splitlines()[-1] == f"error: {target}: cannot write ({problem})"
    nested = tmp_path / "new" / "deeper" / "out.csv"
    assert run_classify(color_model, color_images["red"], "--csv", nested).returncode == 0
    assert read_csv(nested)[0]["label"] == "red"


def test_a_folder_without_images_says_so(color_model: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    done = run_classify(color_model, tmp_path)
    assert done.returncode == 2 and done.stdout == ""  # not success: a script must notice the wrong folder
    assert done.stderr.splitlines()[-1] == f"error: {tmp_path}: no images found (folders are searched for .bmp, .jpeg, .jpg, .png, .webp)"
    as_model = run_classify(tmp_path, color_model)
    assert as_model.returncode == 2 and as_model.stderr.strip() == f"error: {tmp_path}: a folder, not a model file"
    listed = tmp_path / "list.txt"
    listed.write_text(f"{tmp_path}\n")
    in_list = run_classify(color_model, "--list", listed)
    assert in_list.returncode == 1 and f"error: {tmp_path}: a folder, not an image file" in in_list.stderr


def test_a_folder_that_cannot_be_read_is_one_error_not_silence(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    locked = photos / "locked"
    locked.mkdir(parents=True)
    shutil.copy(color_images["red"], photos / "red.jpg")
    shutil.copy(color_images["green"], locked / "green.jpg")
    as_user = without_permission_override()
    locked.chmod(0)
    try:
        done = subprocess.run([*as_user, *CLASSIFY, str(color_model), str(photos)], capture_output=True, text=True)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 1 and "Predicted: red" in done.stdout
    assert f"error: {locked}: a folder that cannot be read (Permission denied); the images in it are left out" in done.stderr


def test_bad_image_is_reported_and_the_rest_still_run(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(color_images["red"], folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"")
    shutil.copy(color_images["blue"], folder / "c.jpg")
    done = run_classify(color_model, folder, "--json")
    assert done.returncode == 1
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row.get("label") for row in rows] == ["red", None, "blue"]
    assert "error" in rows[1] and rows[1]["file"].endswith("b.jpg")
    assert "b.jpg" in done.stderr


def test_not_a_model_exits_2_with_one_line(tmp_path: Path, color_images: dict[str, Path]) -> None:
    fake = tmp_path / "fake.onnx"
    fake.write_text("hello")
    done = run_classify(fake, color_images["red"])
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "fake.onnx" in done.stderr


def test_session_flags(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    optimized = tmp_path / "opt.onnx"
    done = run_classify(color_model, color_images["red"], "--threads", "1", "--optimization", "extended", "--save-optimized", optimized)
    assert done.returncode == 0 and "Predicted: red" in done.stdout and optimized.is_file()
    bad = run_classify(color_model, color_images["red"], "--optimization", "fastest")
    assert bad.returncode == 2 and "optimization must be one of" in bad.stderr and "'--optimization'" in bad.stderr
    nested = tmp_path / "new folder" / "opt.onnx"  # a missing folder is made
    assert run_classify(color_model, color_images["red"], "--save-optimized", nested).returncode == 0 and nested.is_file()
    (tmp_path / "a file").write_text("not a folder")
    blocked = run_classify(color_model, color_images["red"], "--save-optimized", tmp_path / "a file" / "opt.onnx")
    assert blocked.returncode == 2 and blocked.stderr.splitlines()[-1].startswith(f"error: {tmp_path / 'a file' / 'opt.onnx'}: cannot write")
    unknown = run_classify(color_model, color_images["red"], "--providers", "gpu")
    assert unknown.returncode == 2 and "--providers" in unknown.stderr and "unknown providers 'gpu'" in unknown.stderr
    assert "not a loadable" not in unknown.stderr


def _bad_model(case: str, folder: Path, color_model: Path) -> Path:
    """A model file that `classify` must refuse: missing, truncated, text, foreign, or inconsistent."""
    path = folder / f"{case} model.onnx"
    if case == "truncated":
        path.write_bytes(color_model.read_bytes()[:200])
    elif case == "text":
        path.write_text("this is not a model\n")
    elif case in ("no-metadata", "wrong-size", "wrong-labels"):
        onnx = pytest.importorskip("onnx")
        model = onnx.load(color_model)
        if case == "no-metadata":
            del model.metadata_props[:]
        elif case == "wrong-size":
            next(entry for entry in model.metadata_props if entry.key == "input_height").value = "64"
        else:
            next(entry for entry in model.metadata_props if entry.key == "labels").value = '["blue", "green"]'
        onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    "case, problem",
    [
        ("missing", "model file not found"),
        ("truncated", "not a loadable ONNX model"),
        ("text", "not a loadable ONNX model"),
        ("no-metadata", "no retrain-onnx metadata"),
        ("wrong-size", "disagrees with its metadata size"),
        ("wrong-labels", "model outputs 3 class probabilities but its metadata names 2 labels"),
    ],
)
def test_bad_model_exits_2_with_one_line_naming_it(
    color_model: Path, color_images: dict[str, Path], tmp_path: Path, case: str, problem: str
) -> None:
    model = _bad_model(case, tmp_path, color_model)
    done = invoke_classify(model, color_images["red"])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {model}: ") and problem in done.stderr


def test_non_ascii_names_are_printed_and_written_to_csv(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Prüfung 2026"
    folder.mkdir()
    red = solid_image(folder / "Riss Brücke 1.jpg", RGB["red"])
    green = solid_image(folder / "ひび 2.png", RGB["green"])
    table = tmp_path / "résultats.csv"
    done = invoke_classify(color_model, folder, "--csv", table)
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("Image: Riss Brücke 1.jpg | Predicted: red (")
    assert lines[1].startswith("Image: ひび 2.png | Predicted: green (")
    assert [(row["file"], row["label"]) for row in read_csv(table)] == [(str(red), "red"), (str(green), "green")]
    single = invoke_classify(color_model, green)
    assert single.exit_code == 0 and single.stdout.startswith("Image: ひび 2.png | Predicted: green (")


def test_names_the_console_cannot_encode_do_not_stop_the_run(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    solid_image(folder / "Riss Brücke 1.jpg", RGB["red"])
    solid_image(folder / "ひび 2.png", RGB["green"])
    table = tmp_path / "out.csv"
    done = subprocess.run(
        [*CLASSIFY, str(color_model), str(folder), "--csv", str(table)],
        capture_output=True,
        encoding="latin-1",
        env={**os.environ, "PYTHONIOENCODING": "latin-1"},  # e.g. output redirected on a Western-European Windows
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("Image: Riss Brücke 1.jpg | Predicted: red (")
    assert done.stdout.splitlines()[1].startswith("Image: \\u3072\\u3073 2.png | Predicted: green (")
    assert [Path(row["file"]).name for row in read_csv(table)] == ["Riss Brücke 1.jpg", "ひび 2.png"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a file system that takes any bytes as a name")
def test_file_name_that_is_not_utf8_is_classified(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "zip from an old camera"
    folder.mkdir()
    latin1_name = os.fsdecode(b"Br\xfccke.jpg")  # "Brücke.jpg" written in latin-1 on a UTF-8 system
    Image.new("RGB", (8, 8), RGB["red"]).save(folder / latin1_name, "JPEG")
    table = tmp_path / "out.csv"
    done = invoke_classify(color_model, folder, "--csv", table)
    assert done.exit_code == 0, done.stderr
    assert done.stdout.startswith("Image: Br\\udcfccke.jpg | Predicted: red (")
    assert [(row["file"], row["label"]) for row in read_csv(table)] == [(str(folder / "Br\\udcfccke.jpg"), "red")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a file system that takes any bytes as a name")
def test_list_file_with_a_bom_and_a_latin1_name(color_model: Path, tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), RGB["red"]).save(tmp_path / os.fsdecode(b"Br\xfccke.jpg"), "JPEG")  # a Latin-1 name on disk
    Image.new("RGB", (8, 8), RGB["green"]).save(tmp_path / "green.jpg", "JPEG")
    listed = tmp_path / "files.txt"
    listed.write_bytes(b"\xef\xbb\xbf" + f"{tmp_path / 'green.jpg'}\n".encode() + os.fsencode(tmp_path) + b"/Br\xfccke.jpg\n")
    done = invoke_classify(color_model, "--list", listed)
    assert done.exit_code == 0, done.stderr
    assert [line.split(" | ")[1].split(" (")[0] for line in done.stdout.splitlines()] == ["Predicted: green", "Predicted: red"]


@pytest.mark.parametrize("standard_input", ["-", "/dev/stdin"])
def test_list_piped_in_on_standard_input(color_model: Path, color_images: dict[str, Path], standard_input: str) -> None:
    """`find ... | classify MODEL --list -`, as the README shows (a byte-order mark dropped, as from a file),
    and `--list /dev/stdin` where the system has it."""
    if standard_input != "-" and not Path(standard_input).exists():
        pytest.skip(f"no {standard_input} here")
    names = f"\ufeff{color_images['blue']}\n\n{color_images['red']}\n".encode()
    done = subprocess.run([*CLASSIFY, str(color_model), "--list", standard_input], input=names, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert [line.split(" | ")[1].split(" (")[0] for line in done.stdout.decode().splitlines()] == ["Predicted: blue", "Predicted: red"]
    if standard_input == "-":  # nothing piped in: named as standard input, not as "-"
        empty = subprocess.run([*CLASSIFY, str(color_model), "--list", "-"], input=b"", capture_output=True)
        assert empty.returncode == 2 and empty.stderr.decode().splitlines()[-1].startswith("error: standard input: no images found")


def test_a_thousand_images_with_three_bad_ones(color_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    truncated_jpeg = sorted((assets_dir / "UD").glob("*.jpg"))[0].read_bytes()
    bad = {
        100: (b"", "empty (0 bytes)"),
        500: (b"text, not a JPEG\n", "not an image file"),
        900: (truncated_jpeg[:3000], "cannot decode image"),
    }
    labels = {}
    for index in range(1000):
        path = folder / f"img_{index:04d}.{'png' if index % 2 else 'jpg'}"
        if index in bad:
            path.write_bytes(bad[index][0])
        else:
            labels[path.name] = COLOR_LABELS[index % 3]
            Image.new("RGB", (8, 8), RGB[labels[path.name]]).save(path)
    table = tmp_path / "batch.csv"
    done = invoke_classify(color_model, folder, "--csv", table)
    assert done.exit_code == 1

    printed = [line.split(" | ") for line in done.stdout.splitlines()]
    assert len(printed) == 997
    assert [(image, predicted.split(" (")[0]) for image, predicted in printed] == [
        (f"Image: {name}", f"Predicted: {label}") for name, label in labels.items()
    ]
    errors = done.stderr.splitlines()
    assert errors[0].startswith("Model: color.onnx") and errors[-1] == "3 image(s) could not be classified"
    assert len(errors) == 5
    for line, (index, (_, problem)) in zip(errors[1:4], sorted(bad.items())):
        assert line.startswith(f"error: {folder / f'img_{index:04d}.jpg'}: {problem}")

    rows = read_csv(table)
    assert [row["file"] for row in rows] == [str(path) for path in sorted(folder.iterdir())]
    for row in rows:
        name = Path(row["file"]).name
        if name in labels:
            assert (row["label"], row["error"]) == (labels[name], "")
        else:
            assert row["label"] == "" and row["error"] != ""
    assert sum(row["error"] != "" for row in rows) == 3


def test_csv_on_a_full_disk_stops_in_one_line(color_model: Path, color_images: dict[str, Path]) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    done = run_classify(color_model, *color_images.values(), "--csv", "/dev/full")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == "error: /dev/full: cannot write (No space left on device)"


def test_outputs_that_would_replace_the_model_or_an_image_are_refused(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(color_model, model)
    listed = tmp_path / "list.txt"
    listed.write_text(f"{color_images['red']}\n")
    red, folder = color_images["red"], color_images["red"].parent
    before = {path: path.read_bytes() for path in (model, listed, red)}
    for inputs, option, target, problem in (
        ([red], "--csv", model, "is named like an image or a model"),
        ([red], "--csv", tmp_path / "scores.jpg", "is named like an image or a model"),
        ([red], "--save-optimized", model, "is a file this run reads"),
        ([folder], "--save-optimized", red, "is named like an image, not a model file"),  # an image found in the folder
        (["--list", listed], "--csv", listed, "is a file this run reads"),
        (["--list", listed], "--save-optimized", listed, "is a file this run reads"),
    ):
        done = subprocess.run(  # wide enough that typer's error box does not wrap the message
            [*CLASSIFY, str(model), *map(str, inputs), option, str(target)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"}
        )
        assert done.returncode == 2 and problem in done.stderr and f"'{option}'" in done.stderr and "Predicted" not in done.stdout
    assert all(path.read_bytes() == content for path, content in before.items()) and not (tmp_path / "scores.jpg").exists()


def test_options_that_shape_only_a_ray_run_are_refused_without_it(color_model: Path, color_images: dict[str, Path]) -> None:
    for option, value in (("--workers", "2"), ("--ray-address", "auto")):
        done = run_classify(color_model, color_images["red"], option, value)
        assert done.returncode == 2 and "shapes only a run with --engine ray" in unboxed(done.stderr) and "Predicted" not in done.stdout


def test_a_reader_that_stops_early_ends_the_run_quietly(color_model: Path, color_images: dict[str, Path], tmp_path: Path) -> None:
    """`classify ... | head -1`: exit 141 (SIGPIPE) without a traceback, not 1, which means failed images."""
    for index in range(400):
        os.link(color_images["red"], tmp_path / f"{index:03}.jpg")
    process = subprocess.Popen([*CLASSIFY, str(color_model), str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().startswith("Image: 000.jpg")
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141 and "Traceback" not in stderr and "Exception ignored" not in stderr


def _sigint_to_the_process(pid: int) -> None:
    os.kill(pid, signal.SIGINT)


def _sigint_to_a_helper_thread(pid: int) -> None:
    """Ctrl-C as the kernel may also deliver it: to a thread other than the main one (onnxruntime's,
    a decoder's), which does not interrupt a read the main thread is blocked in."""
    tgkill = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
    if tgkill is None or not Path(f"/proc/{pid}/task").is_dir():
        pytest.skip("sends a signal to one thread with Linux's tgkill (x86-64 or ARM64)")
    time.sleep(0.5)  # let the main thread reach its wait for the next name (where the old reader blocked)
    helpers = sorted(int(task) for task in os.listdir(f"/proc/{pid}/task") if int(task) != pid)
    assert ctypes.CDLL(None, use_errno=True).syscall(tgkill, pid, helpers[-1], signal.SIGINT) == 0


@pytest.mark.parametrize("send_ctrl_c", [_sigint_to_the_process, _sigint_to_a_helper_thread], ids=["process", "helper-thread"])
def test_ctrl_c_stops_with_130_and_keeps_the_rows_written(
    color_model: Path, color_images: dict[str, Path], tmp_path: Path, send_ctrl_c: Callable[[int], None]
) -> None:
    """The --list is a named pipe the test keeps open, so the run is waiting for more names when Ctrl-C comes
    (it also shows the list is read as a stream: results arrive before the list ends)."""
    fifo, table = tmp_path / "names", tmp_path / "out.csv"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        [*CLASSIFY, str(color_model), "--list", str(fifo), "--batch-size", "1", "--csv", str(table)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_from_a_terminal,
    )
    with fifo.open("w") as names:
        names.write(f"{color_images['red']}\n{color_images['green']}\n")
        names.flush()
        assert process.stdout is not None and process.stdout.readline().startswith("Image: red.jpg | Predicted: red")
        send_ctrl_c(process.pid)
        try:
            _, stderr = process.communicate(timeout=60)
        finally:
            process.kill()  # a run that missed the Ctrl-C must not outlive the test
    assert process.returncode == 130
    assert stderr.splitlines()[-1].startswith("interrupted after ") and stderr.splitlines()[-1].endswith(f"{table} holds their rows")
    assert read_csv(table)[0]["label"] == "red"


def test_engine_ray_without_ray_installed_is_one_line(color_model: Path, color_images: dict[str, Path]) -> None:
    done = run_without_ray("runtime.cli:main", color_model, color_images["red"], "--engine", "ray")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == NEEDS_RAY
