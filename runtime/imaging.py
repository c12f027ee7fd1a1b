"""Image decoding and resizing: the single place where a file becomes model input.

`train` imports these functions too, so training and deployment see identical pixels.
"""

from __future__ import annotations

import io
import os
import re
import threading
import warnings
from pathlib import Path
from collections.abc import Iterable, Iterator
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from runtime.errors import ImageError, first_line
from runtime.list_stream import list_names

#: File name endings treated as images when a folder is scanned.
IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})

#: Name of the resize method, written into model metadata so non-Python clients can match it.
RESIZE_METHOD = "pillow-bilinear"

#: Images with more pixels than this are refused as possible decompression bombs. It is Pillow's own hard
#: limit (twice `Image.MAX_IMAGE_PIXELS` as it is at import, or as Pillow ships it if an application switched
#: the check off), so Pillow's check and ours agree. Photos below it decode without Pillow's warning.
MAX_PIXELS: int = 2 * (Image.MAX_IMAGE_PIXELS or 89_478_485)

#: Pillow's DecompressionBombError message, from which the pixel count and limit are reported.
_PILLOW_BOMB_MESSAGE = re.compile(r"\((\d+) pixels\) exceeds limit of (\d+)")

#: `warnings.catch_warnings` swaps the process-wide filter list; overlapping uses from several threads can
#: leave a filter installed for good, so this module's uses take turns.
_WARNINGS_LOCK = threading.Lock()

#: numpy dtype kinds an array image may have: bool, unsigned and signed integers, floats.
_PIXEL_KINDS = frozenset("buif")

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

    Applies the EXIF orientation (a malformed EXIF block is ignored: the pixels as stored, since they
    still load) and converts grayscale, RGBA, palette, CMYK and 16-bit images to RGB (16-bit samples keep
    their high byte, whatever their values). With `target_size` (height, width), a JPEG file is decoded
    reduced (draft mode) to no less than twice that size, which keeps huge photos cheap without changing
    the final resized pixels noticeably; a PIL image passed in is never changed. Raises `ImageError`
    naming the source (or `name`, e.g. the file that `bytes` came from) for anything that is not a
    readable image, and for images over `MAX_PIXELS` (refused before any pixel is decoded); never another
    exception, whatever a decoder raises, so one odd file cannot stop a batch.
    """
    name = name or describe_source(source)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, name)
    try:
        image = _open(source, name)
        if target_size is not None and image.format == "JPEG" and not isinstance(source, Image.Image):
            image.draft("RGB", (target_size[1] * 2, target_size[0] * 2))
        return _pil_to_rgb(_upright(image), name)
    except ImageError:
        raise
    except Image.DecompressionBombError as error:
        raise _refused_by_pillow(name, error) from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(name, f"cannot decode image ({first_line(error)})") from error
    except Exception as error:  # a decoder plugin's own error type (struct.error, IndexError, ...)
        raise ImageError(name, f"cannot decode image ({type(error).__name__}: {first_line(error)})") from error


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


def try_load_for_model(source: ImageSource, size: tuple[int, int], name: str | None = None) -> np.ndarray | ImageError:
    """`load_for_model`, returning the `ImageError` instead of raising it (for batches that must go on)."""
    try:
        return load_for_model(source, size, name)
    except ImageError as error:
        return error


def _open(source: ImageSource, name: str) -> Image.Image:
    """Open (lazily) and check the pixel count; Pillow's warning for large but allowed images is silenced."""
    if isinstance(source, Image.Image):
        return _within_limit(source, name)
    data = _read(source, name)
    try:
        with _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as error:
        raise ImageError(name, "not an image file (unknown format)") from error
    return _within_limit(image, name)


def _read(source: ImageSource, name: str) -> bytes:
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ImageError(name, folder_problem(Path(source)) if Path(source).is_dir() else "no such file")
        data = Path(source).read_bytes()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise ImageError(name, f"unsupported image source type {type(source).__name__}")
    if not data:
        raise ImageError(name, "empty (0 bytes), not an image")
    return data


def _within_limit(image: Image.Image, name: str) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ImageError(name, f"image has no pixels ({image.width}x{image.height})")
    if image.width * image.height > MAX_PIXELS:
        raise _refused(name, f"{image.width}x{image.height}", MAX_PIXELS)
    return image


def _refused(name: str, pixels: str, limit: int) -> ImageError:
    return ImageError(name, f"refused: {pixels} pixels is over the limit of {limit:,} (possible decompression bomb)")


def _refused_by_pillow(name: str, error: Image.DecompressionBombError) -> ImageError:
    """Pillow's own check fired first (it reads no more than the header): say so in the toolkit's words."""
    match = _PILLOW_BOMB_MESSAGE.search(str(error))
    if match is None:
        return ImageError(name, f"refused: {first_line(error)}")
    return _refused(name, f"{int(match[1]):,}", int(match[2]))


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; as stored when the EXIF block cannot be parsed
    (Pillow raises struct.error, TypeError and others on malformed camera and phone EXIF)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # the pixels are read afterwards and report their own faults
        return image


def _pil_to_rgb(image: Image.Image, name: str) -> np.ndarray:
    if image.mode.startswith("I"):  # 16-bit samples (I;16*) keep their high byte, 32-bit integers are clipped
        image = Image.fromarray(_to_uint8(np.asarray(image), name), mode="L")
    elif image.mode == "F":
        samples = _finite(np.asarray(image), name)
        image = Image.fromarray(np.clip(samples, 0, 255).astype(np.uint8), mode="L")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8)


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError(name, "array must be HxW, HxWx1, HxWx3 or HxWx4")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(name, "array has no pixels")
    array = _to_uint8(array, name)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[:, :, :3])


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Samples as uint8: bool to 0/255, 16-bit unsigned (either byte order) to its high byte, whatever the
    values, so a dark 16-bit scan stays dark; floats up to 1.0 scaled by 255, everything else clipped to 0..255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in _PIXEL_KINDS:
        raise ImageError(name, f"array of {array.dtype} is not pixels (use bool, integer or float)")
    if array.dtype.kind == "b":
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return (array >> 8).astype(np.uint8)
    if array.dtype.kind == "f" and _finite(array, name).max() <= 1.0:
        array = np.clip(array, 0.0, 1.0) * 255.0
    return np.clip(array, 0, 255).astype(np.uint8)


def _finite(samples: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(samples).all():
        raise ImageError(name, "has NaN or infinite sample values, not pixels")
    return samples


def find_images(folder: str | Path, unreadable: list[Path] | None = None) -> list[Path]:
    """Every supported image below `folder`, sorted; hidden files and folders (names starting with ".")
    below it are passed over.

    Symlinked folders are followed (a class folder may live elsewhere), except one that leads back to a
    folder above it, so a link loop cannot hang the scan; a folder reached by two paths is listed under
    both, as copies would be. Named pipes and devices with an image ending are left out (reading them
    would block); a dangling symlink is kept, so decoding reports it like any unreadable file, and so is a
    folder that cannot be listed (no permission; decoding it says so, see `folder_problem`), so that its
    images are reported lost rather than silently missing, unless an `unreadable` list is given to collect
    such folders instead.
    """
    found: list[Path] = []

    def scan(directory: Path, above: frozenset[tuple[int, int]]) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError:
            (found if unreadable is None else unreadable).append(directory)  # never skipped silently
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue  # hidden: .Trash-1000, .git, macOS's ._IMG.jpg resource forks are not images of the data
            if _is_folder(entry):
                identity = _folder_identity(path)
                if identity is not None and identity not in above:
                    scan(path, above | {identity})
            elif is_image_file(path) and _may_be_file(entry):
                found.append(path)

    root = Path(folder)
    scan(root, frozenset({_folder_identity(root)}))
    return sorted(found)


#: `folder_problem` of a folder that can be read.
FOLDER = "a folder, not an image file"


def folder_problem(folder: Path) -> str:
    """What is wrong with reading the folder `folder` as an image: it is a folder, or one that cannot be
    listed (then the images in it are lost, which the message says)."""
    try:
        os.scandir(folder).close()
    except OSError as error:
        return f"a folder that cannot be read ({error.strerror or first_line(error)}); the images in it are left out"
    return FOLDER


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _folder_identity(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _may_be_file(entry: os.DirEntry[str]) -> bool:
    """False for what exists but is not a regular file (a named pipe, a device). The entry's type comes
    from the folder listing, so a plain file costs no `stat`; only symlinks are followed."""
    try:
        return entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))  # dangling: decoding names the problem
    except OSError:
        return True  # unreadable: decoding names the problem


def image_files(inputs: Iterable[Path], list_file: Path | None = None) -> Iterator[Path]:
    """The image files named by `inputs` (files, and folders searched recursively), then by `list_file`
    (read as a stream, see `runtime.list_stream.list_names`)."""
    for path in inputs:
        if path.is_dir():
            yield from find_images(path)
        else:
            yield path
    if list_file is not None:
        yield from (Path(name) for name in list_names(list_file))
