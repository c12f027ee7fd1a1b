"""runtime.imaging: every supported source and mode decodes to RGB uint8; bad input raises ImageError."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from runtime.errors import ImageError
from runtime.imaging import MAX_PIXELS, decode_image, find_images, load_for_model, resize_image

REPO = Path(__file__).resolve().parent.parent
BOMB_SIDE = 30_000


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


def test_sixteen_bit_grayscale_keeps_the_high_byte_whatever_the_values(tmp_path: Path) -> None:
    wide = np.full((8, 8), 40000, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    pixels = decode_image(path)
    assert pixels.shape == (8, 8, 3)
    assert int(pixels[0, 0, 0]) == 40000 >> 8
    np.testing.assert_array_equal(decode_image(wide), pixels)  # a uint16 array reads like the 16-bit file
    dark = np.full((8, 8), 200, dtype=np.uint16)  # a dark 16-bit scan: 200 of 65535 is near black, not 200 of 255
    Image.fromarray(dark).save(path)
    assert decode_image(path).max() == 0
    dark[0, 0] = 256  # one brighter sample must not change how the others read
    Image.fromarray(dark).save(path)
    assert decode_image(path)[1:, 1:].max() == 0


def test_a_jpeg_whose_exif_block_is_malformed_decodes_as_stored(tmp_path: Path, assets_dir: Path) -> None:
    """Pillow's exif_transpose raises struct.error on it; one such camera file must not stop a batch."""
    source = Image.open(assets_dir / "CD" / "7001-115.jpg")
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Camera"
    encoded = io.BytesIO()
    source.save(encoded, "JPEG", exif=exif)
    data = bytearray(encoded.getvalue())
    data[data.find(b"Exif\0\0") + 17] = 0x20  # the first entry's type: no longer a TIFF type
    with pytest.raises(Exception) as raised:
        ImageOps.exif_transpose(Image.open(io.BytesIO(bytes(data))))
    assert not isinstance(raised.value, ImageError)
    stored = np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))
    np.testing.assert_array_equal(decode_image(bytes(data)), stored)


def test_a_pil_image_passed_in_is_not_changed(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    Image.new("RGB", (2000, 1500), (10, 120, 200)).save(path)
    image = Image.open(path)
    assert load_for_model(image, (64, 64)).shape == (64, 64, 3)
    assert image.size == (2000, 1500)  # no draft mode applied to the caller's object


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


def quadrants(height: int, width: int) -> np.ndarray:
    """Four differently coloured quadrants: every EXIF orientation of it looks different."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    top, left = height // 2, width // 2
    pixels[:top, :left], pixels[:top, left:] = (220, 30, 30), (30, 200, 40)
    pixels[top:, :left], pixels[top:, left:] = (20, 40, 210), (240, 240, 240)
    return pixels


@pytest.mark.parametrize("orientation", range(2, 9))
def test_every_exif_orientation_reaches_the_model_upright(tmp_path: Path, orientation: int) -> None:
    """`load_for_model` is what `Classifier` runs on every file: it must hand over the upright photo."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"orientation{orientation}.jpg"
    Image.fromarray(quadrants(20, 36)).save(path, exif=exif, quality=95)
    stored = np.asarray(Image.open(path).convert("RGB"))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert upright.shape[:2] == ((36, 20) if orientation >= 5 else (20, 36))
    assert upright.shape != stored.shape or not np.array_equal(upright, stored)
    np.testing.assert_array_equal(decode_image(path), upright)
    for size in ((24, 40), (32, 32)):
        np.testing.assert_array_equal(load_for_model(path, size), resize_image(upright, size))


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


def test_find_images_follows_symlinked_folders_keeps_dangling_links_and_skips_pipes(tmp_path: Path) -> None:
    elsewhere, data = tmp_path / "elsewhere", tmp_path / "data"
    elsewhere.mkdir()
    (data / "CD").mkdir(parents=True)
    (elsewhere / "e.jpg").write_bytes(b"")
    os.symlink(elsewhere, data / "X")  # a class folder kept on another disk
    os.symlink(tmp_path / "missing.jpg", data / "CD" / "dangling.jpg")
    os.mkfifo(data / "CD" / "pipe.jpg")
    assert [path.relative_to(data).as_posix() for path in find_images(data)] == ["CD/dangling.jpg", "X/e.jpg"]
    # A link from one class into another lists the images under both (as copies would be; training warns
    # about images filed under two classes) rather than moving them to whichever path came first.
    os.symlink("../X", data / "CD" / "more")
    assert [path.relative_to(data).as_posix() for path in find_images(data)] == ["CD/dangling.jpg", "CD/more/e.jpg", "X/e.jpg"]


def test_array_inputs_of_other_shapes() -> None:
    gray = np.full((5, 6), 7, dtype=np.uint8)
    assert decode_image(gray).shape == (5, 6, 3)
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    assert decode_image(rgba).shape == (5, 6, 3)
    with pytest.raises(ImageError):
        decode_image(np.zeros((2, 2, 2), dtype=np.uint8))


def test_array_dtypes_convert_like_pillow_does() -> None:
    mask = np.eye(4, dtype=bool)
    np.testing.assert_array_equal(decode_image(mask), decode_image(Image.fromarray(mask)))  # True is white, as mode "1"
    assert decode_image(mask)[0, 0].tolist() == [255, 255, 255]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way
        assert decode_image(np.array([[-60000.0, 1.0]], dtype=np.float16)).tolist() == [[[0] * 3, [255] * 3]]
    np.testing.assert_array_equal(decode_image(np.full((2, 2), 300, dtype=np.int64)), 255)


@pytest.mark.parametrize(
    "array, problem",
    [
        (np.zeros((0, 4, 3), dtype=np.uint8), "no pixels"),
        (np.array([[np.nan, 0.5]]), "NaN or infinite"),
        (np.array([[np.inf, 0.5]], dtype=np.float32), "NaN or infinite"),
        (np.full((2, 2), "ab"), "array of <U2 is not pixels"),
        (np.zeros((2, 2), dtype=np.complex64), "array of complex64 is not pixels"),
        (np.zeros((2, 2), dtype=object), "array of object is not pixels"),
    ],
)
def test_arrays_that_are_not_pixels_raise_image_error(array: np.ndarray, problem: str) -> None:
    with pytest.raises(ImageError, match=problem) as raised:
        decode_image(array)
    assert "\n" not in str(raised.value)


def test_a_pil_image_without_pixels_raises_image_error() -> None:
    with pytest.raises(ImageError, match=r"image has no pixels \(0x0\)"):
        decode_image(Image.new("RGB", (0, 0)))


def test_float_image_with_nan_raises_image_error(tmp_path: Path) -> None:
    path = tmp_path / "float.tiff"
    Image.fromarray(np.array([[np.nan, 10.0], [20.0, 30.0]], dtype=np.float32)).save(path)
    with pytest.raises(ImageError, match="^.*float.tiff: has NaN or infinite sample values"):
        decode_image(path)


def write_png_bomb(path: Path, side: int) -> Path:
    """A real 1-bit grayscale PNG of side x side zero pixels, compressed a piece at a time (~100 KB for 30000)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + (side + 7) // 8)  # filter type 0, then the packed bits
    compressor = zlib.compressobj(9)
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)))
        for start in range(0, side, 1000):
            piece = compressor.compress(row * min(1000, side - start))
            if piece:
                handle.write(chunk(b"IDAT", piece))
        handle.write(chunk(b"IDAT", compressor.flush()))
        handle.write(chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def png_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png_bomb(tmp_path_factory.mktemp("bomb") / "bomb.png", BOMB_SIDE)


def test_png_bomb_is_a_valid_png(png_bomb: Path) -> None:
    assert png_bomb.stat().st_size < 1_000_000
    small = write_png_bomb(png_bomb.with_name("small.png"), 100)
    assert decode_image(small).shape == (100, 100, 3)  # the same writer makes a PNG Pillow decodes


def test_decompression_bomb_is_refused_in_one_line(png_bomb: Path) -> None:
    assert MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # the same limit as Pillow's own check
    expected = f"refused: {BOMB_SIDE**2:,} pixels is over the limit of {MAX_PIXELS:,} (possible decompression bomb)"
    for source, name in ((png_bomb, str(png_bomb)), (png_bomb.read_bytes(), "upload.png")):
        with pytest.raises(ImageError) as decoding:
            decode_image(source, name=name)
        with pytest.raises(ImageError) as loading:
            load_for_model(source, (224, 224), name=name)
        assert str(decoding.value) == str(loading.value) == f"{name}: {expected}"


def test_our_limit_holds_when_pillows_check_is_switched_off(png_bomb: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError) as raised:
        load_for_model(png_bomb, (224, 224))
    assert str(raised.value) == (
        f"{png_bomb}: refused: {BOMB_SIDE}x{BOMB_SIDE} pixels is over the limit of {MAX_PIXELS:,}"
        " (possible decompression bomb)"
    )


@pytest.fixture(scope="module")
def huge_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12000x9000 (108 MP) JPEG, blue on the left and red on the right: over Pillow's warning level."""
    image = Image.new("RGB", (12000, 9000), (20, 40, 210))
    ImageDraw.Draw(image).rectangle((6000, 0, 11999, 8999), fill=(220, 30, 30))
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    image.save(path, quality=90)
    return path


def test_huge_photo_decodes_for_a_model_without_a_warning(huge_photo: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pixels = load_for_model(huge_photo, (224, 224))
    assert [str(warning.message) for warning in caught] == []
    assert pixels.shape == (224, 224, 3)
    assert abs(int(pixels[112, 50, 2]) - 210) <= 3 and abs(int(pixels[112, 170, 0]) - 220) <= 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux")
def test_huge_photo_decodes_for_a_model_in_little_memory(huge_photo: Path) -> None:
    code = (
        "import resource, sys\n"
        "from runtime.imaging import load_for_model\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "pixels = load_for_model(sys.argv[1], (224, 224))\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after - before, pixels.shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(huge_photo)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # nothing printed, not even Pillow's warning
    increase_kib, shape = done.stdout.split(" ", 1)
    assert shape.strip() == "(224, 224, 3)"
    assert int(increase_kib) < 80 * 1024  # a full decode takes 12000 * 9000 * 3 bytes = 324 MB


def test_decoding_from_threads_leaves_warning_filters_alone() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "PNG")
    data = buffer.getvalue()
    before = list(warnings.filters)

    def work() -> None:
        for _ in range(300):
            decode_image(data)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert warnings.filters == before
