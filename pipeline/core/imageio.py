"""Reading and writing images: 8/16-bit grey or colour PNG/BMP/JPG/TIFF, written atomically.

Nothing here imports torch, so a bad image fails fast.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from models.luma import LUMA_WEIGHTS
from pipeline.core.atomic import atomic_write
from pipeline.core.errors import CoconetError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")

log = logging.getLogger(__name__)


class ImageError(CoconetError, ValueError):
    """An input image is missing, unreadable, or does not fit its partner."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as float32 on the 0..1 scale: HxW for grey, HxWx3 for colour.

    8-bit images are divided by 255, 16-bit ones by 65535.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            array = tifffile.imread(path)
        else:
            with Image.open(path) as img:
                img.load()
                array = _pil_to_array(img, path)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
    return _normalise(array, path)


def _warn_alpha(path: Path, alpha: np.ndarray) -> None:
    """Log (WARNING) that a transparent image's alpha channel is dropped; silent if opaque."""
    opaque = np.iinfo(alpha.dtype).max if alpha.dtype.kind in "ui" else 1.0
    if (alpha < opaque).any():
        log.warning(
            "%s: has transparent pixels; the alpha channel is ignored (fused as opaque)", path
        )


def _pil_to_array(img: Image.Image, path: Path) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img).astype(np.uint16)
    if img.has_transparency_data:  # RGBA, LA, PA, or a palette / tRNS transparency
        grey = img.mode in ("L", "LA", "La", "1")
        array = np.asarray(img.convert("LA" if grey else "RGBA"))
        _warn_alpha(path, array[..., -1])
        return array[..., 0] if grey else array[..., :3]
    if img.mode in ("L", "RGB"):
        return np.asarray(img)
    return np.asarray(img.convert("RGB"))


def _normalise(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 4:  # a TIFF with an alpha channel
        _warn_alpha(path, array[..., 3])
        array = array[..., :3]
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(f"{path}: unsupported image shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return np.clip(array.astype(np.float32), 0.0, 1.0)
    raise ImageError(f"{path}: unsupported pixel type {array.dtype}")


def to_grey(image: np.ndarray) -> np.ndarray:
    """Luma (BT.601) of a colour image; a grey image is returned as it is."""
    if image.ndim == 2:
        return image
    return image @ np.asarray(LUMA_WEIGHTS, dtype=image.dtype)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0..1 float image to uint8 with rounding."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def read_grey_uint8(path: str | Path) -> np.ndarray:
    """An image as 8-bit grey (colour becomes BT.601 luma, rounded to 8 bits)."""
    return to_uint8(to_grey(read_image(path)))


def write_image(path: str | Path, image: np.ndarray, bits: int = 8) -> Path:
    """Write a 0..1 float (or uint8) image atomically; the format follows the suffix."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        allowed = ", ".join(IMAGE_SUFFIXES)
        raise ImageError(f"{path}: unsupported output format (use one of {allowed})")
    if image.dtype == np.uint8:
        array = image
    elif bits == 16:
        array = np.clip(np.rint(image * 65535.0), 0, 65535).astype(np.uint16)
    else:
        array = to_uint8(image)

    def _write(tmp: Path) -> None:
        if path.suffix.lower() in (".tif", ".tiff"):
            tifffile.imwrite(tmp, array)
        else:
            Image.fromarray(array).save(tmp, format=_PIL_FORMATS[path.suffix.lower()])

    try:
        return atomic_write(path, _write)
    except OSError as exc:  # a full disk, a lost permission: name the target, not the temp file
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from exc


_PIL_FORMATS = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def list_images(folder: str | Path) -> dict[str, Path]:
    """Images in a folder keyed by file stem; an empty or missing folder, or two images with
    one stem (``a.png`` and ``a.bmp``), is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such directory")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.stem in found:
            raise ImageError(
                f"{found[path.stem]} and {path} have the same name; images pair up by name, "
                "so keep only one of them"
            )
        found[path.stem] = path
    if not found:
        raise ImageError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def match_pairs(**folders: str | Path) -> list[tuple[str, dict[str, Path]]]:
    """Match images across folders by stem; any unmatched name is an error naming it."""
    listings = {role: list_images(folder) for role, folder in folders.items()}
    names = set().union(*(set(v) for v in listings.values()))
    missing = {
        role: sorted(names - set(listing))
        for role, listing in listings.items()
        if names - set(listing)
    }
    if missing:
        detail = "; ".join(
            f"{folders[role]} lacks {', '.join(stems[:10])}{' …' if len(stems) > 10 else ''}"
            for role, stems in missing.items()
        )
        raise ImageError(f"unmatched image names: {detail}")
    return [(name, {role: listings[role][name] for role in listings}) for name in sorted(names)]
