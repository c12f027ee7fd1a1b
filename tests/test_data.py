"""train.data: labels, stable stratified split, group pattern, clear errors. (No TensorFlow needed.)"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from train.data import DatasetError, LabelSource, label_from_filename, load_dataset, minimum_images_per_class


def test_labels_from_folders_on_the_bundled_sample(assets_dir: Path) -> None:
    dataset = load_dataset(assets_dir)
    assert dataset.labels == ["CD", "UD"]
    assert len(dataset.images) == 400
    counts = Counter(image.split for image in dataset.images)
    assert 0.6 < counts["train"] / 400 < 0.8
    assert counts["validation"] > 30 and counts["test"] > 30
    for split, per_class in dataset.counts().items():
        assert set(per_class) == {"CD", "UD"}, split


def test_labels_from_file_name_prefix(tmp_path: Path, assets_dir: Path) -> None:
    for label in ("CD", "UD"):
        for path in sorted((assets_dir / label).glob("*.jpg"))[:10]:
            shutil.copy(path, tmp_path / f"{label}-{path.name}")
    dataset = load_dataset(tmp_path, LabelSource.filename)
    assert dataset.labels == ["CD", "UD"]
    assert all(image.path.name.startswith(image.label) for image in dataset.images)
    assert label_from_filename("UD7001-3.jpg") == "UD"
    assert label_from_filename("7001.jpg") is None


def test_split_is_stable_when_images_are_added(small_dataset: Path, assets_dir: Path) -> None:
    before = {image.relative: image.split for image in load_dataset(small_dataset, seed=3).images}
    for path in sorted((assets_dir / "CD").glob("*.jpg"))[20:40]:
        shutil.copy(path, small_dataset / "CD" / path.name)
    after = {image.relative: image.split for image in load_dataset(small_dataset, seed=3).images}
    assert len(after) == len(before) + 20
    assert all(after[name] == split for name, split in before.items())
    other_seed = {image.relative: image.split for image in load_dataset(small_dataset, seed=4).images}
    assert other_seed != after


def test_group_pattern_keeps_each_parent_photo_in_one_split(assets_dir: Path) -> None:
    dataset = load_dataset(assets_dir, group_pattern=r"^(\d+)-", fractions=(0.5, 0.25, 0.25))
    splits_per_parent: dict[str, set[str]] = {}
    for image in dataset.images:
        splits_per_parent.setdefault(image.path.name.split("-")[0], set()).add(image.split)
    assert all(len(splits) == 1 for splits in splits_per_parent.values())


def test_unsupported_endings_root_files_and_hidden_names_are_ignored(small_dataset: Path) -> None:
    (small_dataset / "CD" / "notes.txt").write_text("x")
    first = next((small_dataset / "CD").glob("*.jpg"))
    shutil.copy(first, small_dataset / "loose.jpg")
    (small_dataset / ".Trash-1000" / "files").mkdir(parents=True)  # a USB stick's trash: not a class
    for hidden in (small_dataset / ".Trash-1000" / "files" / first.name, small_dataset / "CD" / f"._{first.name}", small_dataset / "UD" / ".x.jpg"):
        shutil.copy(first, hidden)
    dataset = load_dataset(small_dataset)
    assert len(dataset.images) == 40 and dataset.labels == ["CD", "UD"]


def test_errors_name_the_problem(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path / "empty")
    for path in sorted((small_dataset / "CD").glob("*.jpg"))[:4]:
        shutil.copy(path, tmp_path / "empty" / path.name)  # a flat folder: images, but no class folders
    with pytest.raises(DatasetError, match=r"no labelled images; 4 image\(s\) left out, no label \(not in a class folder\): 7001-.*and 1 more$"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="a file, not a data folder"):
        load_dataset(tmp_path / "empty" / path.name)
    shutil.rmtree(tmp_path / "empty")  # `small_dataset` lives in `tmp_path` too
    shutil.rmtree(small_dataset / "UD")
    with pytest.raises(DatasetError, match="only the class"):
        load_dataset(small_dataset)


def test_a_class_too_small_for_the_split_is_named_with_the_minimum(small_dataset: Path) -> None:
    for path in sorted((small_dataset / "UD").glob("*.jpg"))[3:]:
        path.unlink()
    with pytest.raises(DatasetError, match=r"class\(es\) UD \(3\) have fewer than 7 images, the minimum per class for the split 0.7/0.15/0.15") as raised:
        load_dataset(small_dataset)
    assert "\n" not in str(raised.value) and "--split" in str(raised.value)
    with pytest.raises(DatasetError, match=r"UD \(3\) have fewer than 4 images"):
        load_dataset(small_dataset, fractions=(0.5, 0.25, 0.25))
    assert minimum_images_per_class((1.0, 0.0, 0.0)) == 1 and minimum_images_per_class((0.8, 0.2, 0.0)) == 5


def test_nested_folders_take_the_first_level_label(small_dataset: Path) -> None:
    deep = small_dataset / "CD" / "bridge 7" / "deck"
    deep.mkdir(parents=True)
    for path in sorted((small_dataset / "CD").glob("*.jpg"))[:5]:
        path.rename(deep / path.name)
    dataset = load_dataset(small_dataset)
    nested = [image for image in dataset.images if "/deck/" in image.relative]
    assert len(nested) == 5 and {image.label for image in nested} == {"CD"}
    assert len(dataset.images) == 40


def test_duplicates_across_classes_are_listed(small_dataset: Path) -> None:
    first = sorted((small_dataset / "CD").glob("*.jpg"))[0]
    shutil.copy(first, small_dataset / "UD" / "copied.jpg")
    shutil.copy(first, small_dataset / "CD" / "same class copy.jpg")  # same class: not a label conflict
    dataset = load_dataset(small_dataset)
    assert dataset.duplicates_across_classes() == [sorted([f"CD/{first.name}", "CD/same class copy.jpg", "UD/copied.jpg"])]
    shutil.copy(sorted((small_dataset / "UD").glob("7*.jpg"))[0], small_dataset / "CD" / "other.jpg")
    assert len(load_dataset(small_dataset).duplicates_across_classes()) == 2
    (small_dataset / "UD" / "dangling.jpg").symlink_to(small_dataset / "gone.jpg")  # the bottleneck phase reports it
    assert len(load_dataset(small_dataset).duplicates_across_classes()) == 2
