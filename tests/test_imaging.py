"""runtime.imaging: every supported source and mode decodes to RGB uint8; bad input raises ImageError."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from runtime.errors import ImageError
from runtime.imaging import decode_image, find_images, load_for_model, resize_image


def test_real_jpeg_from_path_bytes_pil_and_array_agree(assets_dir: Path) -> None:
    path = sorted((assets_dir / "CD").glob("*.jpg"))[0]
    from_path = decode_image(path)
    assert from_path.shape == (256, 256, 3) and from_path.dtype == np.uint8
    np.testing.assert_array_equal(decode_image(path.read_bytes()), from_path)
    np.testing.assert_array_equal(decode_image(Image.open(path)), from_path)
    np.testing.assert_array_equal(decode_image(from_path), from_path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    image = Image.new("RGB", (20, 10), (200, 100, 50)).convert(mode)
    path = tmp_path / ("x.jpg" if mode in ("L", "CMYK") else "x.png")
    image.save(path)
    pixels = decode_image(path)
    assert pixels.shape == (10, 20, 3) and pixels.dtype == np.uint8


def test_sixteen_bit_grayscale_keeps_the_high_byte(tmp_path: Path) -> None:
    wide = np.full((8, 8), 40000, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    pixels = decode_image(path)
    assert pixels.shape == (8, 8, 3)
    assert int(pixels[0, 0, 0]) == 40000 >> 8


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    upright = decode_image(path)
    assert upright.shape == (40, 20, 3)
    assert upright[5, 10, 2] > 200 and upright[35, 10, 0] > 200  # blue on top, red below


def test_resize_is_the_shared_bilinear_method() -> None:
    pixels = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    resized = resize_image(pixels, (32, 24))
    assert resized.shape == (32, 24, 3) and resized.dtype == np.uint8
    expected = np.asarray(Image.fromarray(pixels).resize((24, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(resized, expected)
    assert resize_image(pixels, (50, 70)) is pixels


def test_load_for_model_on_a_huge_jpeg_uses_draft(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(path)
    pixels = load_for_model(path, (64, 64))
    assert pixels.shape == (64, 64, 3)
    assert abs(int(pixels[32, 32, 2]) - 200) <= 3


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image file"),
    ],
)
def test_bad_files_raise_image_error_naming_the_file(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match=problem) as raised:
        decode_image(path)
    assert str(path) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_truncated_jpeg_raises_image_error(tmp_path: Path, assets_dir: Path) -> None:
    data = sorted((assets_dir / "UD").glob("*.jpg"))[0].read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="cut.jpg: cannot decode image"):
        decode_image(path)


def test_missing_file_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        decode_image(tmp_path / "nope.jpg")


def test_bytes_error_can_name_the_file() -> None:
    with pytest.raises(ImageError, match="^photo.jpg: "):
        decode_image(b"garbage", name="photo.jpg")


def test_find_images_filters_endings_and_survives_symlink_loops(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for name in ("x.JPG", "y.png", "z.txt", "w.webp"):
        (tmp_path / "a" / name).write_bytes(b"")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    found = [path.name for path in find_images(tmp_path)]
    assert found == ["w.webp", "x.JPG", "y.png"]


def test_array_inputs_of_other_shapes() -> None:
    gray = np.full((5, 6), 7, dtype=np.uint8)
    assert decode_image(gray).shape == (5, 6, 3)
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    assert decode_image(rgba).shape == (5, 6, 3)
    with pytest.raises(ImageError):
        decode_image(np.zeros((2, 2, 2), dtype=np.uint8))
