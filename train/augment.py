"""Augmented views: N seeded random variants of each training image, computed and cached like any view.

View k of seed s is one fixed random transform (a random crop resized back, a flip or 90-degree turn,
a brightness and contrast change) drawn from (s, k); its name goes into the cache file name, so the
features of augmented views are computed once and reused on the next run like any other feature.
Only training images get them: validation and test images are seen as the model will see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.imaging import resize_image

#: Smallest crop side, as a share of the image side.
MIN_CROP = 0.75
#: Brightness and contrast factors are drawn from [1 - JITTER, 1 + JITTER].
JITTER = 0.2


@dataclass(frozen=True)
class AugmentedView:
    """One seeded random transform; `apply` works on an (H, W, C) image or an (N, H, W, C) batch."""

    seed: int
    index: int

    @property
    def name(self) -> str:
        """The cache-file suffix of this view, e.g. "aug0-3"."""
        return f"aug{self.seed}-{self.index}"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """This view of `pixels` (uint8), same shape."""
        if pixels.ndim == 4:
            return np.stack([self.apply(image) for image in pixels])
        rng = np.random.default_rng([self.seed, self.index])
        height, width = pixels.shape[:2]
        share = rng.uniform(MIN_CROP, 1.0)
        crop_height, crop_width = max(1, round(height * share)), max(1, round(width * share))
        top, left = rng.integers(0, height - crop_height + 1), rng.integers(0, width - crop_width + 1)
        image = resize_image(np.ascontiguousarray(pixels[top : top + crop_height, left : left + crop_width]), (height, width))
        turns = int(rng.integers(0, 4)) if height == width else 2 * int(rng.integers(0, 2))
        image = np.rot90(image, turns)
        if rng.integers(0, 2):
            image = image[:, ::-1]
        brightness, contrast = rng.uniform(1 - JITTER, 1 + JITTER, size=2)
        mean = image.mean()
        adjusted = (image.astype(np.float32) - mean) * contrast + mean * brightness
        return np.ascontiguousarray(np.clip(np.rint(adjusted), 0, 255).astype(np.uint8))


def augmented_views(count: int, seed: int) -> list[AugmentedView]:
    """The `count` augmented views of `seed`."""
    return [AugmentedView(seed, index) for index in range(count)]
