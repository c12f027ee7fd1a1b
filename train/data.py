"""Data set discovery: find labelled images and give each a stable train/validation/test split."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

from runtime.errors import ImageError, RetrainOnnxError
from runtime.imaging import FOLDER, IMAGE_EXTENSIONS, find_images, folder_problem
from train.atomic import file_sha256

SPLITS = ("train", "validation", "test")


class DatasetError(RetrainOnnxError):
    """The data folder cannot be used for training; the message says why and what to do."""


class LabelSource(str, Enum):
    """Where an image's label comes from."""

    folder = "folder"
    filename = "filename"


@dataclass(frozen=True)
class LabeledImage:
    """One image file with its label and split."""

    path: Path
    relative: str
    label: str
    split: str


@dataclass(frozen=True)
class Dataset:
    """All labelled images of a data folder, with their splits."""

    root: Path
    labels: list[str]
    images: list[LabeledImage]
    #: Relative paths of supported images left out for want of a label (see `labelled_images`).
    unlabelled: list[str] = field(default_factory=list)
    #: Folders that could not be listed: the images in them are lost (see `labelled_images`).
    unreadable: list[ImageError] = field(default_factory=list)
    #: Notes on first-level folders that hold no supported image, so give no class (see `classless_folders`).
    classless: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[LabeledImage]:
        """The images of one split ("train", "validation" or "test"), in path order."""
        return [image for image in self.images if image.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split per label."""
        return {name: dict(Counter(image.label for image in self.split(name))) for name in SPLITS}

    def duplicates_across_classes(self) -> list[list[str]]:
        """Groups of byte-identical files filed under more than one class (relative paths, sorted).

        Only files of equal size are hashed, so a folder without duplicates costs one `stat` per file. A file
        that cannot be read (a dangling link, no permission) is left out here; the bottleneck phase reports it.
        """
        by_size: dict[int, list[LabeledImage]] = defaultdict(list)
        for image in self.images:
            with contextlib.suppress(OSError):
                by_size[image.path.stat().st_size].append(image)
        groups: dict[str, list[LabeledImage]] = defaultdict(list)
        for same_size in (group for group in by_size.values() if len({image.label for image in group}) > 1):
            for image in same_size:
                with contextlib.suppress(OSError):
                    groups[file_sha256(image.path)].append(image)
        return sorted(
            sorted(image.relative for image in group) for group in groups.values() if len({image.label for image in group}) > 1
        )


def copies_of_earlier_splits(dataset: Dataset, content_hashes: dict[Path, str]) -> dict[str, list[LabeledImage]]:
    """Per split, its images with the same bytes as an image of an earlier split (validation: a training
    image; test: a training or validation one), for the splits that have any. The split hashes names, so
    copies of one photo under two names can land in two splits; scored on the copy of a training image, a
    model looks better than it is. `content_hashes` holds the SHA-256 of every readable image."""
    earlier: set[str] = set()
    copies: dict[str, list[LabeledImage]] = {}
    for name in SPLITS:  # in order: train, validation, test
        images = [image for image in dataset.split(name) if image.path in content_hashes]
        found = [image for image in images if content_hashes[image.path] in earlier]
        if found:
            copies[name] = found
        earlier.update(content_hashes[image.path] for image in images)
    return copies


#: Hex digits of an image's SHA-256 kept as its fingerprint in model metadata (48 bits: a chance collision
#: between 100,000 training and 10,000 test images is about 4 in a million).
FINGERPRINT_DIGITS = 12


def fingerprint(content_hash: str) -> str:
    """The short fingerprint of an image with SHA-256 `content_hash` (hex), as stored in model metadata."""
    return content_hash[:FINGERPRINT_DIGITS]


def label_from_filename(name: str) -> str | None:
    """The file name's prefix before the first non-letter ("UD-7001-12.jpg" -> "UD"), or None."""
    match = re.match(r"[^\W\d_]+", name)
    return match.group(0) if match else None


def assign_split(key: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """The split of `key` for `seed`: a pure function of the key's hash, so it never moves when
    other images are added or removed (as TF-Hub's retrain.py does)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8")).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    train, validation, _ = fractions
    if position < train:
        return "train"
    if position < train + validation:
        return "validation"
    return "test"


def load_dataset(
    root: str | Path,
    labels_from: LabelSource = LabelSource.folder,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    group_pattern: str | None = None,
) -> Dataset:
    """Find every supported image under `root`, label it and assign its split.

    Labels are the first-level sub-folder names (`folder`) or file-name prefixes (`filename`). The split
    hashes each file's path relative to `root`, or, with `group_pattern`, the pattern's first captured
    group in the file name (all crops of one photo land in one split). Each class is split on its own,
    so the split is stratified by class.
    """
    root = Path(root)
    check_data_folder(root)
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DatasetError(f"split fractions {fractions} must be non-negative and sum to 1")
    pattern = re.compile(group_pattern) if group_pattern else None
    found, unlabelled, unreadable = labelled_images(root, labels_from)
    images = [replace(image, split=assign_split(_group_key(image.path.name, image.relative, pattern), seed, fractions)) for image in found]
    labels = sorted({image.label for image in images})
    if not images and unlabelled:
        raise DatasetError(f"{root}: no labelled images; {unlabelled_note(unlabelled, labels_from)}")
    if not images:
        raise DatasetError(f"{root}: no images found (supported endings: .jpg .jpeg .png .bmp .webp)")
    if len(labels) < 2:
        where = "sub-folders" if labels_from is LabelSource.folder else "file-name prefixes"
        raise DatasetError(f"{root}: found only the class {labels}; need at least two classes as {where}")
    classless = classless_folders(root, labels) if labels_from is LabelSource.folder else []
    dataset = Dataset(root=root, labels=labels, images=images, unlabelled=unlabelled, unreadable=unreadable, classless=classless)
    _check_class_sizes(dataset, fractions)
    _check_each_class_trains(dataset)
    return dataset


def check_data_folder(root: Path) -> None:
    """`DatasetError` unless `root` is a folder that can be listed."""
    if not root.is_dir():
        raise DatasetError(f"{root}: {'a file, not a data folder' if root.exists() else 'data folder not found'}")
    try:
        os.scandir(root).close()
    except OSError as error:
        raise DatasetError(f"{root}: cannot read the data folder ({error.strerror})") from error


def minimum_images_per_class(fractions: tuple[float, float, float]) -> int:
    """Images a class needs so that each non-empty split expects at least one of them."""
    return math.ceil(1 / min(fraction for fraction in fractions if fraction > 0) - 1e-9)


def labelled_images(
    root: Path, labels_from: LabelSource = LabelSource.folder
) -> tuple[list[LabeledImage], list[str], list[ImageError]]:
    """Every supported image under `root` that has a label, in path order (split not yet assigned: ""),
    the relative paths of those without one (directly in `root` with folder labels; names that do not
    start with a letter with file-name labels), and the folders that could not be listed (no permission)."""
    images, unlabelled, unlisted = [], [], []
    for path in find_images(root, unlisted):
        relative = path.relative_to(root).as_posix()
        label = _label_of(relative, labels_from)
        if label is None:
            unlabelled.append(relative)
        else:
            images.append(LabeledImage(path=path, relative=relative, label=label, split=""))
    return images, unlabelled, [ImageError(folder, folder_problem(folder)) for folder in unlisted]


def classless_folders(root: Path, labels: list[str]) -> list[str]:
    """A note for each first-level folder of `root` that gives no class because it holds no supported
    image (empty, or only other file types such as .tif), so a class is never dropped without a word.
    Hidden folders (`.git`, `.retrain-cache`) are not classes and are passed over."""
    notes = []
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(".") and path.name not in labels):
        if folder_problem(folder) != FOLDER:
            continue  # unreadable: listed as skipped instead (`labelled_images`)
        others = sorted(path.name for path in folder.rglob("*") if path.is_file())
        held = f"{len(others)} file(s) of other types, e.g. {others[0]}" if others else "nothing"
        notes.append(f"{folder}: no supported image ({held}), so no class {folder.name!r}; supported endings: {', '.join(sorted(IMAGE_EXTENSIONS))}")
    return notes


def unlabelled_note(unlabelled: list[str], labels_from: LabelSource, shown: int = 3) -> str:
    """One line saying which images were left out for want of a label, and why."""
    why = "not in a class folder" if labels_from is LabelSource.folder else "the name does not start with a class prefix of letters"
    names = ", ".join(unlabelled[:shown]) + (f" and {len(unlabelled) - shown} more" if len(unlabelled) > shown else "")
    return f"{len(unlabelled)} image(s) left out, no label ({why}): {names}"


def _label_of(relative: str, labels_from: LabelSource) -> str | None:
    parts = relative.split("/")
    if labels_from is LabelSource.folder:
        return parts[0] if len(parts) > 1 else None
    return label_from_filename(parts[-1])


def _group_key(name: str, relative: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        return relative
    match = pattern.search(name)
    if match is None:
        return relative
    return match.group(1) if match.groups() else match.group(0)


def _check_class_sizes(dataset: Dataset, fractions: tuple[float, float, float]) -> None:
    minimum = minimum_images_per_class(fractions)
    sizes = Counter(image.label for image in dataset.images)
    small = [f"{label} ({sizes[label]})" for label in dataset.labels if sizes[label] < minimum]
    if small:
        proportions = "/".join(f"{fraction:g}" for fraction in fractions)
        raise DatasetError(
            f"{dataset.root}: class(es) {', '.join(small)} have fewer than {minimum} images, the minimum per class "
            f"for the split {proportions}; add images, or train with another --split"
        )


def _check_each_class_trains(dataset: Dataset) -> None:
    training = dataset.counts()["train"]
    missing = [label for label in dataset.labels if not training.get(label)]
    if missing:
        raise DatasetError(
            f"{dataset.root}: class(es) {', '.join(missing)} have no training image after the split; "
            "add images or change --seed"
        )
