"""Reading and writing image files: 8/16-bit grey or colour PNG/BMP/JPG/TIFF (decoded by
:mod:`pipeline.core.decoding`), written atomically; folders of images paired by name.

Nothing here imports torch, so a bad image fails fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from models.luma import LUMA_WEIGHTS
from pipeline.core.atomic import atomic_write
from pipeline.core.decoding import DEFAULT_MAX_PIXELS, ImageError, decode_image
from pipeline.core.ordering import natural_key

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
__all__ = ["DEFAULT_MAX_PIXELS", "IMAGE_SUFFIXES", "ImageError", "read_image", "write_image"]


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image as float32 on the 0..1 scale: HxW for grey, HxWx3 for colour, by the
    rules of :mod:`pipeline.core.decoding` (size checked from the header, scale, EXIF)."""
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image (folders go to --ir-dir/--vis-dir)")
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: an empty file (0 bytes), not an image")
    try:
        with open(path, "rb") as handle:
            return decode_image(handle, str(path), max_pixels)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def to_grey(image: np.ndarray) -> np.ndarray:
    """Luma (BT.601) of a colour image; a grey image is returned as it is."""
    if image.ndim == 2:
        return image
    return image @ np.asarray(LUMA_WEIGHTS, dtype=image.dtype)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """0..1 float image to uint8 with rounding."""
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def read_grey_uint8(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """An image as 8-bit grey (colour becomes BT.601 luma, rounded to 8 bits)."""
    return to_uint8(to_grey(read_image(path, max_pixels)))


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
            import tifffile  # only for TIFF output (0.2 s)

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
    for path in sorted(folder.iterdir(), key=lambda p: natural_key(p.name)):
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
    """Match images across folders by stem, in natural order (2 before 10); any unmatched name
    is an error naming it."""
    listings = {role: list_images(folder) for role, folder in folders.items()}
    names = set().union(*(set(v) for v in listings.values()))
    missing = {
        role: sorted(names - set(listing), key=natural_key)
        for role, listing in listings.items()
        if names - set(listing)
    }
    if missing:
        detail = "; ".join(
            f"{folders[role]} lacks {', '.join(stems[:10])}{' …' if len(stems) > 10 else ''}"
            for role, stems in missing.items()
        )
        raise ImageError(f"unmatched image names: {detail}")
    ordered = sorted(names, key=natural_key)
    return [(name, {role: listings[role][name] for role in listings}) for name in ordered]
