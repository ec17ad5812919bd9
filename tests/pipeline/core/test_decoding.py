"""Decoding images safely (pipeline.core.decoding): sizes from the header, scales, non-finite
pixels, EXIF orientation, and the errors that name the file."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import tifffile
from PIL import Image

from pipeline.core.decoding import ImageError, decode_image
from pipeline.core.imageio import read_image
from tests.helpers.hostile import png_header_only, zlib_tiff


def tiff(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data", [png_header_only(30000, 30000), zlib_tiff(30000, 30000)], ids=["png", "tiff"]
)
def test_a_few_bytes_declaring_gigapixels_are_refused_from_the_header(tmp_path, data):
    path = tmp_path / "bomb.img"
    path.write_bytes(data)
    assert len(data) < 10_000
    tic = time.perf_counter()
    with pytest.raises(ImageError) as error:
        read_image(path)
    assert time.perf_counter() - tic < 1.0
    assert str(error.value).startswith(f"{path}: 30000x30000 is 900.0 MP, over the limit of 100.0")
    assert "--max-pixels" in str(error.value)


def test_the_limit_is_a_setting():
    image = tiff(np.zeros((40, 50), np.uint8))
    assert decode_image(image, "small", max_pixels=2000).shape == (40, 50)
    with pytest.raises(ImageError, match="small: 50x40 is 0.0 MP, over the limit"):
        decode_image(image, "small", max_pixels=1999)


def test_non_finite_pixels_are_refused_not_fused_black():
    array = np.full((8, 8), 0.5, np.float32)
    array[2:4, 2:4] = np.nan
    array[0, 0] = np.inf
    with pytest.raises(ImageError, match=r"ir.tif: 5 pixel\(s\) are NaN or infinite"):
        decode_image(tiff(array), "ir.tif")


@pytest.mark.parametrize(
    ("peak", "scale"),
    [(0.8, 1.0), (200.0, 255.0), (4000.0, 65535.0)],
    ids=["unit", "8bit", "16bit"],
)
def test_float_images_follow_the_scale_rule(peak, scale):
    array = np.linspace(0, peak, 64, dtype=np.float32).reshape(8, 8)
    decoded = decode_image(tiff(array), "f.tif")
    np.testing.assert_allclose(decoded, array / scale, rtol=1e-6)
    assert decoded.max() <= 1.0


@pytest.mark.parametrize(
    ("low", "high", "message"), [(-1, 0.5, "down to -1"), (0, 1e6, "above 16")]
)
def test_floats_off_every_scale_are_refused(low, high, message):
    array = np.array([[low, high], [0, 0]], np.float32)
    with pytest.raises(ImageError, match=message):
        decode_image(tiff(array), "f.tif")


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), np.uint8)
    array[:, :20] = 255  # left half white
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buffer.getvalue(), "photo.jpg")
    assert decoded.shape == (40, 20, 3)  # portrait, as viewers show it
    assert decoded[:20].mean() > 0.9 and decoded[20:].mean() < 0.1  # the white half is on top


def test_multi_page_tiffs_and_garbage_are_refused():
    buffer = io.BytesIO()
    with tifffile.TiffWriter(buffer) as writer:
        for _ in range(2):
            writer.write(np.zeros((8, 8), np.uint8), contiguous=False)
    stack = buffer.getvalue()
    with pytest.raises(ImageError, match="multi-page TIFF"):
        decode_image(stack, "s.tif")
    with pytest.raises(ImageError, match="x.png: not a readable image"):
        decode_image(b"\x89PNG\r\n\x1a\nrubbish", "x.png")
