"""train.data: labels, stable stratified split, group pattern, clear errors. (No TensorFlow needed.)"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from train.data import DatasetError, LabelSource, label_from_filename, load_dataset


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


def test_unsupported_endings_and_root_files_are_ignored(small_dataset: Path) -> None:
    (small_dataset / "CD" / "notes.txt").write_text("x")
    shutil.copy(next((small_dataset / "CD").glob("*.jpg")), small_dataset / "loose.jpg")
    dataset = load_dataset(small_dataset)
    assert len(dataset.images) == 40


def test_errors_name_the_problem(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(tmp_path / "empty")
    shutil.rmtree(small_dataset / "UD")
    with pytest.raises(DatasetError, match="only the class"):
        load_dataset(small_dataset)
