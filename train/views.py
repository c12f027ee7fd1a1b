"""Symmetry views: the rotated and mirrored copies of an image that training and the exported model use.

A crack, a spall or a patch of rust has no "up": its photo rotated by 90 degrees or mirrored shows the
same defect. `--views N` makes that knowledge explicit. The head trains on the features of all N views of
every training image (more training data at no labelling cost, cached like any other feature), and the
exported model averages its class probabilities over the same N views (in the ONNX graph itself, so the
runtime needs no code for it). N is 1 (the image only), 2 (plus its mirror image), 4 (all flips, any
image shape) or 8 (all flips and transposes: the full dihedral group, square inputs only).

This module is numpy only (feature workers import it without TensorFlow); the same views as Keras layers
for the exported graph are in `train.view_layers`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from runtime.errors import RetrainOnnxError

VIEW_COUNTS = (1, 2, 4, 8)


class ViewError(RetrainOnnxError):
    """An impossible views setting."""


class ImageView(Protocol):
    """Anything that makes one variant of an image for feature extraction: a `View`, or an augmented view."""

    @property
    def name(self) -> str: ...

    def apply(self, pixels: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class View:
    """Transpose (swap rows and columns), then mirror left-right and/or upside down."""

    transpose: bool = False
    flip_left_right: bool = False
    flip_up_down: bool = False

    @property
    def name(self) -> str:
        """A short stable name, used in cache file names ("" for the image itself)."""
        return "".join(code for code, on in (("t", self.transpose), ("h", self.flip_left_right), ("v", self.flip_up_down)) if on)

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """This view of `pixels`, an (H, W, C) image or an (N, H, W, C) batch."""
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
    if count == 8 and input_size[0] != input_size[1]:
        raise ViewError(f"--views 8 transposes images and needs a square input size, not {input_size}; use --views 4")
    views = [
        View(transpose, left_right, up_down)
        for transpose in (False, True)
        for up_down in (False, True)
        for left_right in (False, True)
    ]
    return views[:count]
