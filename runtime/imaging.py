"""Image decoding and resizing: the single place where a file becomes model input.

`train` imports these functions too, so training and deployment see identical pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.errors import ImageError, first_line

#: File name endings treated as images when a folder is scanned.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

#: Name of the resize method, written into model metadata so non-Python clients can match it.
RESIZE_METHOD = "pillow-bilinear"

#: Images with more pixels than this are refused as possible decompression bombs.
MAX_PIXELS = 200_000_000

ImageSource = Union[str, Path, bytes, bytearray, Image.Image, np.ndarray]


def is_image_file(path: Path) -> bool:
    """True when the file name has one of the supported image endings."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def describe_source(source: ImageSource) -> str:
    """A short name for an image source, used in error messages and results."""
    if isinstance(source, (str, Path)):
        return str(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.size[0]}x{source.size[1]}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {'x'.join(map(str, source.shape))}>"
    return f"<{type(source).__name__}>"


def decode_image(
    source: ImageSource, target_size: tuple[int, int] | None = None, name: str | None = None
) -> np.ndarray:
    """Decode any supported source to an RGB uint8 array of shape (height, width, 3).

    Applies the EXIF orientation and converts grayscale, RGBA, palette, CMYK and 16-bit images to RGB.
    With `target_size` (height, width), JPEG decoding is reduced (draft mode) to no less than twice
    that size, which keeps huge photos cheap without changing the final resized pixels noticeably.
    Raises `ImageError` naming the source (or `name`, e.g. the file that `bytes` came from) for anything
    that is not a readable image.
    """
    name = name or describe_source(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    try:
        image = _open(source, name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(name, f"image has {image.width}x{image.height} pixels, over the limit of {MAX_PIXELS:,}")
            if target_size is not None and image.format == "JPEG":
                image.draft("RGB", (target_size[1] * 2, target_size[0] * 2))
            image = ImageOps.exif_transpose(image)
            return _pil_to_rgb(image)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(name, f"cannot decode image ({first_line(error)})") from error


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 array to `size` (height, width) with the toolkit's one resize method."""
    height, width = size
    if rgb.shape[0] == height and rgb.shape[1] == width:
        return rgb
    resized = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_for_model(source: ImageSource, size: tuple[int, int], name: str | None = None) -> np.ndarray:
    """Decode and resize in one step: the uint8 (height, width, 3) array a model of `size` takes."""
    return resize_image(decode_image(source, target_size=size, name=name), size)


def _open(source: ImageSource, name: str) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ImageError(name, "no such file")
        data = Path(source).read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(name, f"unsupported image source type {type(source).__name__}")
    if not data:
        raise ImageError(name, "empty (0 bytes), not an image")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageError(name, "not an image file (unknown format)") from error


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode.startswith("I"):
        wide = np.asarray(image).astype(np.uint32)
        if wide.max(initial=0) > 255:  # 16-bit samples: keep the high byte
            wide >>= 8
        image = Image.fromarray(wide.astype(np.uint8), mode="L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), mode="L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(name, "array must be HxW, HxWx1, HxWx3 or HxWx4")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def find_images(folder: str | Path) -> list[Path]:
    """Every supported image below `folder`, sorted; symlinked folders are not followed (no loops)."""
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=False):
        subdirectories.sort()
        found.extend(Path(directory, name) for name in files if is_image_file(Path(name)))
    return sorted(found)
