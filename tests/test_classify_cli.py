"""The `classify` console script, run as a user runs it."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import COLOR_LABELS

CLASSIFY = [sys.executable, "-m", "runtime"]


def run_classify(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLASSIFY, *map(str, args)], capture_output=True, text=True)


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
    assert bad.returncode == 2 and "optimization must be one of" in bad.stderr
