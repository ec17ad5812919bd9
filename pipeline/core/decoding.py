"""Decoding image bytes safely: the size is checked from the header before any pixel is decoded,
and the pixels are checked and brought to one scale after.

The rules every way in shares (``coconet fuse`` and ``metrics``, the stages, the inbox, the
served model):

* **Size.** Width x height above ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, 100 MP) is
  refused from the header, before decoding: a few-KB PNG or zlib TIFF can declare gigabytes.
* **Formats.** PNG, BMP, JPEG (Pillow) and TIFF (tifffile), told apart by their first bytes;
  8- or 16-bit integers, or floats; grey, RGB, or with an alpha channel (dropped, with a warning
  when it is not opaque). A multi-page TIFF or an image of other channels is refused.
* **Scale.** Integers are divided by their type's maximum (255, 65535). Floats: values within
  0..1 are kept; otherwise, if every value is within 0..255 they are read as 8-bit levels
  (divided by 255), else within 0..65535 as 16-bit levels (divided by 65535); negative values or
  values above 65535 are refused (scale them to 0..1 first). Never clipped silently.
* **Non-finite pixels** (NaN, infinity) are refused: they would fuse to a black image.
* **EXIF orientation** is applied, so a photo is read the way viewers show it.
"""

from __future__ import annotations

import io
import logging
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.defaults import DEFAULT_MAX_PIXELS
from pipeline.core.errors import CoconetError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
FLOAT_SCALES = (1.0, 255.0, 65535.0)  # float pixels read as 0..1, 8-bit or 16-bit levels

log = logging.getLogger(__name__)
Image.MAX_IMAGE_PIXELS = None  # Pillow's own bomb check refuses at open, naming no limit of ours;
# every image is opened here, and check_size applies the project's limit from the header


class ImageError(CoconetError, ValueError):
    """An input image is missing, unreadable, too large, or does not fit its partner."""


def check_size(width: int, height: int, max_pixels: int, name: str) -> None:
    """Refuse ``width`` x ``height`` above ``max_pixels``, naming the image and the limit."""
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} is {width * height / 1e6:.1f} MP, over the limit of "
            f"{max_pixels / 1e6:.1f} MP (raise it with --max-pixels or the max_pixels param "
            "if the image is genuine)"
        )


def decode_image(
    source: BinaryIO | bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """An image's pixels as float32 on 0..1: HxW grey or HxWx3 colour (the module's rules).

    ``name`` (a path, or ``vis`` for a request) is what errors and warnings name.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    head = stream.read(4)
    stream.seek(0)
    try:
        if head in TIFF_MAGIC:
            array = _decode_tiff(stream, name, max_pixels)
        else:
            array = _decode_pil(stream, name, max_pixels)
    except ImageError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: not a readable image ({exc})") from exc
    return normalise(array, name)


def _decode_pil(stream: BinaryIO, name: str, max_pixels: int) -> np.ndarray:
    with Image.open(stream) as img:
        check_size(*img.size, max_pixels, name)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _pil_to_array(img, name)


def _decode_tiff(stream: BinaryIO, name: str, max_pixels: int) -> np.ndarray:
    import tifffile  # only for TIFF: 0.2 s that PNG/BMP/JPEG fusion does not pay

    with tifffile.TiffFile(stream) as tif:
        if len(tif.series) != 1 or len(tif.pages) != 1:
            raise ImageError(f"{name}: a multi-page TIFF; give one image per file")
        shape = tif.series[0].shape
        if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
            raise ImageError(f"{name}: unsupported TIFF shape {shape} (want HxW or HxWxC)")
        check_size(shape[1], shape[0], max_pixels, name)
        return tif.series[0].asarray()


def _warn_alpha(name: str, alpha: np.ndarray) -> None:
    """Log (WARNING) that a transparent image's alpha channel is dropped; silent if opaque."""
    opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
    if (alpha < opaque).any():
        log.warning(
            "%s: has transparent pixels; the alpha channel is ignored (fused as opaque)", name
        )


def _pil_to_array(img: Image.Image, name: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img).astype(np.uint16)
    if img.mode == "F":
        return np.asarray(img, dtype=np.float32)
    if img.has_transparency_data:  # RGBA, LA, PA, or a palette / tRNS transparency
        grey = img.mode in ("L", "LA", "La", "1")
        array = np.asarray(img.convert("LA" if grey else "RGBA"))
        _warn_alpha(name, array[..., -1])
        return array[..., 0] if grey else array[..., :3]
    if img.mode in ("L", "RGB"):
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def normalise(array: np.ndarray, name: str) -> np.ndarray:
    """Decoded pixels -> float32 on 0..1, HxW or HxWx3, by the module's rules."""
    if array.ndim == 3 and array.shape[2] == 4:  # a TIFF with an alpha channel
        _warn_alpha(name, array[..., 3])
        array = array[..., :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(f"{name}: unsupported image shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return _float_scale(array.astype(np.float32, copy=False), name)
    raise ImageError(f"{name}: unsupported pixel type {array.dtype} (8/16-bit or float)")


def _float_scale(array: np.ndarray, name: str) -> np.ndarray:
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise ImageError(
            f"{name}: {bad} pixel(s) are NaN or infinite; an image must hold finite values "
            "(it would fuse to a black image)"
        )
    low, high = float(array.min()), float(array.max())
    if low < 0:
        raise ImageError(
            f"{name}: float pixels go down to {low:g}; scale the image to 0..1 (or to 8/16-bit "
            "levels) first"
        )
    for scale in FLOAT_SCALES:
        if high <= scale:
            return array / np.float32(scale) if scale != 1.0 else array
    raise ImageError(
        f"{name}: float pixels go up to {high:g}, above 16-bit levels; scale the image to 0..1 "
        "first"
    )
