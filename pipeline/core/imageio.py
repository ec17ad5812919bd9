"""Reading and writing images: 8/16-bit grey or colour PNG/BMP/JPG/TIFF, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import CoconetError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601


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
            import tifffile

            array = tifffile.imread(path)
        else:
            with Image.open(path) as img:
                img.load()
                array = _pil_to_array(img)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageError(f"{path}: not a readable image ({exc})") from exc
    return _normalise(array, path)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(img).astype(np.uint16)
    if img.mode in ("L", "RGB"):
        return np.asarray(img)
    if img.mode == "LA":
        return np.asarray(img.convert("L"))
    return np.asarray(img.convert("RGB"))


def _normalise(array: np.ndarray, path: Path) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 4:
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


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside ``target``; rename it onto ``target`` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=target.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(target: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``target``."""
    with atomic_path(target) as tmp:
        write(tmp)
    return Path(target)


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
            import tifffile

            tifffile.imwrite(tmp, array)
        else:
            Image.fromarray(array).save(tmp, format=_PIL_FORMATS[path.suffix.lower()])

    return atomic_write(path, _write)


_PIL_FORMATS = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}


def list_images(folder: str | Path) -> dict[str, Path]:
    """Images in a folder keyed by file stem; an empty or missing folder is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such directory")
    found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
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
