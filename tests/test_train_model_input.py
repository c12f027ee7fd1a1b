"""train-model on bad options and odd data folders: refused in one line before any feature is computed, or
trained with every left-out file named; never a traceback, never a model with a class it never learned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

from typer.testing import CliRunner  # noqa: E402

from conftest import NEEDS_RAY, run_without_ray, unboxed, without_permission_override  # noqa: E402
from train.cli import app  # noqa: E402
from train.atomic import file_sha256  # noqa: E402
from train.data import copies_of_earlier_splits, load_dataset  # noqa: E402
from train.model_files import model_stem, report_path_for, sibling, variant_path  # noqa: E402

SMALL_MODEL = ["--weights", "none", "--image-size", "64"]


def train_in_process(data: Path, workspace: Path, model: Path, *extra: str):
    return CliRunner().invoke(app, [str(data), "--export", str(model), "--workspace", str(workspace), *SMALL_MODEL, *extra])


def train(data: Path, workspace: Path, model: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "train", str(data), "--export", str(model), "--workspace", str(workspace), *SMALL_MODEL, *extra]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--split", "a,b,c"], "'a,b,c': give numbers separated by commas"),
        (["--split", "0,0,0"], "give three non-negative numbers"),
        (["--split", "-10,60,50"], "give three non-negative numbers"),
        (["--split", "1e-320,1,1"], "a split that is not empty needs at least 0.1% of the images"),
        (["--split", "85,0,15", "--target-recall", "0.9"], "--target-recall is met on the validation split, which is empty"),
        (["--group-pattern", "("], "'(' is not a regular expression"),
        (["--c-values", "nan"], "'nan': give numbers separated by commas"),
        (["--c-values", "0.01,1e-300"], "'0.01,1e-300': C values must lie between 1e-06 and 1e+06"),
        (["--seed", "-1"], "--seed"),
        (["--positive", "XX"], "--positive 'XX' is not one of the classes ['CD', 'UD']"),
        (["--split", "85,15,0"], "the test split is empty; add images or change --split"),
        (["--group-pattern", r"^(\d+)-"], "the test split is empty; add images or change --split or --group-pattern"),
        (["--tolerance", "3", "--force"], "Invalid value for --tolerance / --force: shapes only the variants, and no such variant is asked for"),
        (["--half", "--calibration-images", "50"], "Invalid value for --calibration-images: shapes only int8, and no such variant is asked for"),
        (["--ray-address", "auto"], "Invalid value for --ray-address: shapes only a run with --engine ray, which is not asked for"),
        (["--fine-tune-epochs", "7"], "Invalid value for --fine-tune-epochs: shapes only a run with --fine-tune-layers, which is not asked for"),
    ],
)
def test_bad_options_are_refused_before_any_feature_is_computed(small_dataset: Path, tmp_path: Path, extra: list[str], message: str) -> None:
    done = train_in_process(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", *extra)
    assert done.exit_code == 2, done.output
    assert message in unboxed(done.stderr)
    assert not list(tmp_path.rglob("*.features")) and not (tmp_path / "m.onnx").exists()


def test_engine_ray_without_ray_installed_stops_before_any_work(small_dataset: Path, tmp_path: Path) -> None:
    done = run_without_ray("train.entry_points:train_model", small_dataset, "--engine", "ray", "--workspace", tmp_path / "cache", "--export", tmp_path / "m.onnx")
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Bottlenecks" not in done.stdout
    assert done.stderr.splitlines()[-1] == NEEDS_RAY and not (tmp_path / "cache").exists()


def test_unusable_workspace_export_and_data_paths_are_named_in_one_line(small_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("x")
    (tmp_path / "folder.onnx").mkdir()
    cases = {
        (small_dataset, tmp_path / "a file", tmp_path / "m.onnx"): f"{tmp_path / 'a file'}: cannot write (a file of that name is in the way",
        (small_dataset, tmp_path / "cache", tmp_path / "folder.onnx"): f"{tmp_path / 'folder.onnx'}: cannot write (a folder of that name is in the way)",
        (tmp_path / "a file", tmp_path / "cache", tmp_path / "m.onnx"): f"{tmp_path / 'a file'}: a file, not a data folder",
    }
    for (data, workspace, model), message in cases.items():
        done = train_in_process(data, workspace, model)
        assert done.exit_code == 2 and done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1, done.stderr
    os.mkfifo(tmp_path / "pipe.onnx")
    image = next((small_dataset / "CD").glob("*.jpg"))
    linked = tmp_path.parent / f"{tmp_path.name}-linked-UD"  # a class folder that is a symlink: its target counts too
    shutil.move(small_dataset / "UD", linked)
    (small_dataset / "UD").symlink_to(linked)
    inside = f"cannot write inside the data folder {small_dataset} (the next run would read the model's report plots as images)"
    for model, message in [
        (tmp_path / "pipe.onnx", f"{tmp_path / 'pipe.onnx'}: cannot write (not a regular file: a device, pipe or socket is in the way)"),
        (image, f"{image}: {inside}"),
        (small_dataset / "UD" / "m.onnx", f"{small_dataset / 'UD' / 'm.onnx'}: {inside}"),
        (linked / "m.onnx", f"{linked / 'm.onnx'}: {inside}"),
        (small_dataset / "models" / "m.onnx", f"{small_dataset / 'models' / 'm.onnx'}: {inside}"),
    ]:
        done = train_in_process(small_dataset, tmp_path / "cache", model)
        assert done.exit_code == 2 and done.stderr.startswith(f"error: {message}") and done.stderr.count("\n") == 1, done.stderr
    assert image.read_bytes().startswith(b"\xff\xd8") and (tmp_path / "pipe.onnx").is_fifo()  # neither replaced
    (tmp_path / "m.int8.onnx").mkdir()  # where --quantize int8 would write, known before any training
    done = train_in_process(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--quantize", "int8")
    assert done.exit_code == 2 and done.stderr == f"error: {tmp_path / 'm.int8.onnx'}: cannot write (a folder of that name is in the way)\n"
    assert not list(tmp_path.rglob("*.features"))


def test_three_classes_refuse_target_recall_before_any_feature_is_computed(small_dataset: Path, tmp_path: Path) -> None:
    shutil.copytree(small_dataset / "CD", small_dataset / "X")
    done = train_in_process(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--target-recall", "0.9")
    assert done.exit_code == 2 and "--positive and --target-recall need exactly two classes, found 3" in done.stderr
    assert not list(tmp_path.rglob("*.features"))


def test_odd_data_folders_train_with_every_left_out_file_named(small_dataset: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Every validation image unreadable, a class folder that is a symlink, a dangling link, a named pipe
    # with an image ending, and an image with no class folder.
    validation = load_dataset(small_dataset, fractions=(0.5, 0.25, 0.25)).split("validation")
    for image in validation:
        image.path.write_bytes(b"not an image")
    elsewhere = tmp_path_factory.mktemp("other disk") / "UD"  # outside the data folder (`tmp_path` holds it)
    shutil.move(small_dataset / "UD", elsewhere)
    (small_dataset / "UD").symlink_to(elsewhere)
    (small_dataset / "CD" / "dangling.jpg").symlink_to(elsewhere / "gone.jpg")
    os.mkfifo(small_dataset / "CD" / "pipe.jpg")
    shutil.copy(next(elsewhere.glob("*.jpg")), small_dataset / "loose.jpg")

    done = train(small_dataset, tmp_path / "cache", tmp_path / "m.v2", "--split", "50,25,25", "--views", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    out = " ".join(done.stdout.split())
    assert "1 image(s) left out, no label (not in a class folder): loose.jpg" in out
    assert "no decision threshold" in out and "CD/dangling.jpg" in out and "pipe.jpg" not in out
    assert "C = 0.01 (no validation images: the default; choosing among --c-values needs validation images)" in out
    report = json.loads((tmp_path / "m.v2.report.json").read_text())  # named after the whole file name
    assert json.loads(report["metadata"]["labels"]) == ["CD", "UD"] and report["head"]["c"] == 0.01
    assert len(report["skipped_images"]) == len(validation) + 1  # the validation images and the dangling link, nothing else
    assert report["split_counts"]["validation"] and report["images_used"]["validation"] == {}  # files found vs images read
    assert report["images_used"]["train"]["UD"] > 0 and (tmp_path / "m.v2.report.html").exists()

    again = train(small_dataset, tmp_path / "cache", tmp_path / "m.v2", "--split", "50,25,25", "--views", "1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"nothing computed; {len(validation)} unreadable in an earlier run, skipped" in " ".join(again.stdout.split())


def test_copies_of_training_images_under_other_names_are_left_out_of_validation_and_test(small_dataset: Path, tmp_path: Path) -> None:
    for path in sorted((small_dataset / "CD").glob("*.jpg"))[:15]:
        shutil.copy(path, path.with_name(f"copy-{path.name}"))
    dataset = load_dataset(small_dataset, fractions=(0.5, 0.25, 0.25))
    expected = copies_of_earlier_splits(dataset, {image.path: file_sha256(image.path) for image in dataset.images})
    assert expected.get("test") and expected.get("validation")  # the name hash put copies in both
    done = train(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--split", "50,25,25", "--views", "1", "--half", "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    counted = f"{len(expected['validation'])} validation image(s) and {len(expected['test'])} test image(s)"
    assert f"warning: {counted} have the same bytes as images of an earlier split" in " ".join(done.stdout.split())
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert report["copies_left_out"] == {name: [image.relative for image in images] for name, images in expected.items()}
    used = len(dataset.split("test")) - len(expected["test"])
    assert sum(report["images_used"]["test"].values()) == report["test"]["images"] == report["edge_variants"][0]["test_images"] == used


def test_many_images_filed_under_two_classes_are_summed_up_after_five(small_dataset: Path, tmp_path: Path) -> None:
    for path in sorted((small_dataset / "CD").glob("*.jpg"))[:7]:
        shutil.copy(path, small_dataset / "UD" / f"misfiled-{path.name}")
    done = train_in_process(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--views", "1")
    assert done.exit_code == 0, done.output[-3000:]
    out = " ".join(done.stdout.split())
    assert out.count("warning: the same image is filed under several classes:") == 5
    assert "warning: and 2 more images filed under several classes (7 in all, listed in the report's duplicates_across_classes)" in out
    assert len(json.loads((tmp_path / "m.report.json").read_text())["duplicates_across_classes"]) == 7


def test_bracketed_names_classless_and_unreadable_folders_are_named_on_the_console(small_dataset: Path, tmp_path: Path) -> None:
    """Names are printed as they are (rich markup would drop `[ok]` or stop at `x[/y].jpg`); a folder with no
    supported image and a folder that cannot be read are each named, never lost without a word."""
    (small_dataset / "UD").rename(small_dataset / "intact [ok]")
    (small_dataset / "CD" / "bad[red].jpg").write_bytes(b"not an image")
    (small_dataset / "CD" / "x[").mkdir()
    (small_dataset / "CD" / "x[" / "y].jpg").write_bytes(b"not an image either")
    (small_dataset / "PD").mkdir()
    (small_dataset / "PD" / "scan.tif").write_bytes(b"II*\x00")
    locked = small_dataset / "CD" / "more"
    locked.mkdir()
    shutil.copy(next((small_dataset / "CD").glob("*.jpg")), locked / "extra.jpg")
    locked.chmod(0)
    try:
        as_user = without_permission_override()
        command = [*as_user, sys.executable, "-m", "train", str(small_dataset), "--export", str(tmp_path / "m.onnx"),
                   "--workspace", str(tmp_path / "cache"), *SMALL_MODEL, "--views", "1"]
        done = subprocess.run(command, capture_output=True, text=True)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr[-3000:]
    out = " ".join(done.stdout.split())
    for line in (
        f"skipped {small_dataset / 'CD' / 'bad[red].jpg'}: not an image file",
        f"skipped {small_dataset / 'CD' / 'x[' / 'y].jpg'}: not an image file",
        f"skipped {locked}: a folder that cannot be read (Permission denied); the images in it are left out",
        f"note: {small_dataset / 'PD'}: no supported image (1 file(s) of other types, e.g. scan.tif), so no class 'PD'",
        "Decision threshold: intact [ok] when",
    ):
        assert line in out, line
    report = json.loads((tmp_path / "m.report.json").read_text())
    assert json.loads(report["metadata"]["labels"]) == ["CD", "intact [ok]"]
    assert any(entry.startswith(f"{locked}: a folder that cannot be read") for entry in report["skipped_images"])


def test_a_class_without_one_readable_image_is_refused_not_exported(small_dataset: Path, tmp_path: Path) -> None:
    (small_dataset / "__MACOSX" / "CD").mkdir(parents=True)
    for index in range(20):  # AppleDouble files saved without their hidden "._" prefix
        (small_dataset / "__MACOSX" / "CD" / f"{index}.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    done = train(small_dataset, tmp_path / "cache", tmp_path / "m.onnx", "--views", "1")
    assert done.returncode == 2 and not (tmp_path / "m.onnx").exists()
    assert done.stderr.strip().splitlines()[-1:] == [  # TensorFlow's own start-up lines come before it
        f"error: {small_dataset}: class(es) __MACOSX have no readable training image (20 of their images skipped, listed above); "
        "fix or remove them, or move the folder out of the data set"
    ]


def test_files_beside_a_model_are_named_after_it_without_onnx() -> None:
    assert model_stem(Path("out/model.onnx")) == Path("out/model") and model_stem(Path("out/model.v2")) == Path("out/model.v2")
    assert report_path_for(Path("out/model.ONNX")) == Path("out/model.report.json")
    assert report_path_for(Path("out/model.v2")) == Path("out/model.v2.report.json")
    assert variant_path(Path("out/model.onnx"), "int8") == Path("out/model.int8.onnx")
    assert variant_path(Path("out/model.v2"), "fp16") == Path("out/model.v2.fp16.onnx")
    assert sibling(Path("m.int8.onnx"), ".report.json") == Path("m.int8.report.json")


@pytest.mark.parametrize(
    ("command", "missing"), [("train-model", "tensorflow"), ("quantize-model", "sklearn"), ("evaluate-model", "matplotlib")]
)
def test_a_training_command_without_the_train_extra_names_what_to_install(command: str, missing: str) -> None:
    """`pip install .` installs every command; without the extra each stops with one line, not an ImportError."""
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        f"importlib.util.find_spec = lambda name, *rest: None if name == {missing!r} else real(name, *rest)\n"
        f"sys.argv = [{command!r}, '--help']\n"
        f"from train.entry_points import {command.replace('-', '_')} as main\n"  # what the console script runs
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == f"error: {command} needs {missing}; install the train extra from the checkout: pip install -e '.[train]'\n"
