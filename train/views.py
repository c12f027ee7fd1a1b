"""Symmetry views: the rotated and mirrored copies of an image that training and the exported model use.

A crack, a spall or a patch of rust has no "up": its photo rotated by 90 degrees or mirrored shows the
same defect. `--views N` makes that knowledge explicit. The head trains on the features of all N views of
every training image (more training data at no labelling cost, cached like any other feature), and the
exported model averages its class probabilities over the same N views (in the ONNX graph itself, so the
runtime needs no code for it). N is 1 (the image only), 2 (plus its mirror image), 4 (all flips, any
image shape), 8 (all flips and transposes: the full dihedral group, square inputs only) or 16 (those 8,
and the same 8 of the image's central 87.5% zoomed back to the input size: a second scale, for twice the
backbone work).

A zoom is bilinear resampling written as one matrix per axis (`zoom_matrix`), applied the same way here and
in the graph, rounded to whole pixel values. For sizes that are multiples of 8 every weight is a multiple
of 1/16, so both compute the same pixels exactly whatever their order of summation; at other sizes a value
that lies halfway between two levels can round either way (a few in a million differ by one).

This module is numpy only (feature workers import it without TensorFlow); the same views as Keras layers
for the exported graph are in `train.view_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from runtime.errors import RetrainOnnxError

VIEW_COUNTS = (1, 2, 4, 8, 16)
#: The share of the image (per side, centred) that the zoomed views of `--views 16` keep.
ZOOM = 0.875


class ViewError(RetrainOnnxError):
    """An impossible views setting."""


class ImageView(Protocol):
    """Anything that makes one variant of an image for feature extraction: a `View`, or an augmented view."""

    @property
    def name(self) -> str: ...

    def apply(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class View:
    """Zoom into the centre (`zoom` < 1), then transpose (swap rows and columns), then mirror left-right
    and/or upside down."""

    transpose: bool = False
    flip_left_right: bool = False
    flip_up_down: bool = False
    zoom: float = 1.0

    @property
    def name(self) -> str:
        """A short stable name, used in cache file names ("" for the image itself, "z875th" for a zoomed one)."""
        zoomed = f"z{round(self.zoom * 1000)}" if self.zoom != 1 else ""
        return zoomed + "".join(code for code, on in (("t", self.transpose), ("h", self.flip_left_right), ("v", self.flip_up_down)) if on)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """This view of `pixels`, an (H, W, C) uint8 image or an (N, H, W, C) batch."""
        if self.zoom != 1:
            pixels = zoom_pixels(pixels, self.zoom)
        if self.transpose:
            pixels = np.swapaxes(pixels, -3, -2)
        if self.flip_left_right:
            pixels = pixels[..., :, ::-1, :]
        if self.flip_up_down:
            pixels = pixels[..., ::-1, :, :]
        return np.ascontiguousarray(pixels)


def symmetry_views(count: int, input_size: tuple[int, int]) -> list[View]:
    """The first `count` views; the image itself always comes first."""
    if count not in VIEW_COUNTS:
        raise ViewError(f"--views must be one of {', '.join(map(str, VIEW_COUNTS))}, not {count}")
    if count >= 8 and input_size[0] != input_size[1]:
        raise ViewError(f"--views {count} transposes images and needs a square input size, not {input_size}; use --views 4")
    views = [
        View(transpose, left_right, up_down, zoom)
        for zoom in (1.0, ZOOM)
        for transpose in (False, True)
        for up_down in (False, True)
        for left_right in (False, True)
    ]
    return views[:count]


def zoom_matrix(size: int, fraction: float) -> np.ndarray:
    """(size, size) float32 matrix M: M @ row-vector-of-pixels is the central `fraction` of them resized back
    to `size` (bilinear, pixel centres aligned as in PIL and TensorFlow's half-pixel resizing)."""
    kept = max(1, round(size * fraction))
    start = (size - kept) // 2
    source = np.clip((np.arange(size) + 0.5) * kept / size - 0.5, 0, kept - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, kept - 1)
    weight = source - low
    matrix = np.zeros((size, size))
    np.add.at(matrix, (np.arange(size), start + low), 1 - weight)
    np.add.at(matrix, (np.arange(size), start + high), weight)
    return matrix.astype(np.float32)


def zoom_pixels(pixels: np.ndarray, fraction: float) -> np.ndarray:
    """The central `fraction` of (..., H, W, C) uint8 `pixels` resized back to (H, W), as whole pixel values."""
    rows, columns = zoom_matrix(pixels.shape[-3], fraction), zoom_matrix(pixels.shape[-2], fraction)
    planes = np.moveaxis(pixels.astype(np.float32), -1, -3)  # (..., C, H, W)
    zoomed = rows @ planes @ columns.T
    return np.moveaxis(np.rint(zoomed), -3, -1).astype(np.uint8)  # convex combinations of pixels: within 0..255
