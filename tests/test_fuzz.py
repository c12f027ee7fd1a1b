"""Fuzzing runtime.imaging: whatever goes in, out comes a uint8 HxWx3 array or an `ImageError`, nothing else."""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from runtime.errors import ImageError
from runtime.imaging import decode_image, load_for_model

#: numpy's RuntimeWarnings (NaN cast, overflow) mean undefined pixels: fail on them. Pillow's own warnings
#: about corrupt input (UserWarning) and its bomb warning for a corrupt TIFF's huge tile are expected.
pytestmark = [
    pytest.mark.filterwarnings("error::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

MODEL_SIZE = (16, 24)
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Real file signatures, so random tails reach each format's decoder instead of stopping at "unknown format".
MAGIC = [
    b"",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"RIFF\x00\x10\x00\x00WEBPVP8L",
    b"II*\x00",
    b"MM\x00*",
]
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F", "LAB", "HSV"]
FORMATS = ["PNG", "JPEG", "BMP", "WEBP", "TIFF", "GIF"]
BYTES_PER_PIXEL = {"L": 1, "P": 1, "LA": 2, "PA": 2, "I;16": 2, "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}


def _saveable() -> list[tuple[str, str]]:
    """The (mode, format) pairs this Pillow build writes and reads back."""
    pairs = []
    for mode in MODES:
        for image_format in FORMATS:
            try:
                buffer = io.BytesIO()
                Image.new(mode, (3, 2)).save(buffer, image_format)
                Image.open(io.BytesIO(buffer.getvalue())).load()
            except (OSError, ValueError, KeyError):
                continue
            pairs.append((mode, image_format))
    return pairs


SAVEABLE = _saveable()


def assert_contract(decode: Callable[[], np.ndarray], size: tuple[int, int] | None = None) -> None:
    """`decode()` returns a uint8 HxWx3 array (of `size` when given) or raises a one-line ImageError."""
    try:
        pixels = decode()
    except ImageError as error:
        assert "\n" not in str(error) and error.problem
        return
    assert isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.shape[0] > 0 and pixels.shape[1] > 0
    if size is not None:
        assert pixels.shape[:2] == size


def assert_both_contracts(source: object) -> None:
    assert_contract(lambda: decode_image(source))
    assert_contract(lambda: load_for_model(source, MODEL_SIZE), MODEL_SIZE)


@st.composite
def encoded_images(draw: st.DrawFn) -> bytes:
    """A small random image in a random mode and format, maybe truncated, maybe with corrupted bytes."""
    mode, image_format = draw(st.sampled_from(SAVEABLE))
    width, height = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    if mode == "1":
        length = (width + 7) // 8 * height
    else:
        length = width * height * BYTES_PER_PIXEL.get(mode, 4)
    image = Image.frombytes(mode, (width, height), draw(st.binary(min_size=length, max_size=length)))
    buffer = io.BytesIO()
    image.save(buffer, image_format)
    data = bytearray(buffer.getvalue())
    for position, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)), max_size=4)):
        data[position] = value
    cut = draw(st.one_of(st.none(), st.integers(0, len(data))))
    return bytes(data[:cut])


@FUZZ
@given(magic=st.sampled_from(MAGIC), tail=st.binary(max_size=2048))
def test_random_bytes_decode_or_raise_image_error(magic: bytes, tail: bytes) -> None:
    assert_both_contracts(magic + tail)


@FUZZ
@given(data=encoded_images())
def test_random_images_truncated_or_corrupted_decode_or_raise_image_error(data: bytes) -> None:
    assert_both_contracts(data)


def test_the_image_strategy_covers_every_mode_and_format() -> None:
    assert {mode for mode, _ in SAVEABLE} >= {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "F"}
    assert {image_format for _, image_format in SAVEABLE} == set(FORMATS)


array_dtypes = st.one_of(
    hnp.scalar_dtypes(),
    hnp.integer_dtypes(endianness="?"),
    hnp.floating_dtypes(endianness="?"),
    hnp.unicode_string_dtypes(max_len=3),
    hnp.byte_string_dtypes(max_len=3),
)
array_shapes = st.one_of(
    hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from([1, 3, 4])),
)


@FUZZ
@given(array=hnp.arrays(array_dtypes, array_shapes))
def test_random_arrays_decode_or_raise_image_error(array: np.ndarray) -> None:
    assert_both_contracts(array)


@FUZZ
@given(array=hnp.arrays(np.object_, array_shapes, elements=st.one_of(st.integers(), st.floats(), st.text(max_size=2))))
def test_random_object_arrays_decode_or_raise_image_error(array: np.ndarray) -> None:
    assert_both_contracts(array)
