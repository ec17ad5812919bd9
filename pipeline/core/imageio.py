"""Reading and writing images: 8/16-bit grey or colour PNG/BMP/JPG/TIFF, written atomically.

Also the checks a fusion run makes before it loads a model: input pairs, output locations and
output formats. Nothing here imports torch, so a bad argument fails fast.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import CoconetError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601

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
            import tifffile

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


# --- fusion inputs and outputs, checked before a model is loaded ---------------------------


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def read_pair(vis_path: Path, ir_path: Path, resize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair; differing sizes are an error naming both (or, with ``resize``, the infrared
    image is resized to the visible size)."""
    vis, ir = read_image(vis_path), read_image(ir_path)
    if vis.shape[:2] != ir.shape[:2]:
        if not resize:
            raise ImageError(
                f"{ir_path} is {_size(ir)} but {vis_path} is {_size(vis)} (width x height); "
                "pass --resize to resize the infrared image to the visible size"
            )
        import cv2

        height, width = vis.shape[:2]
        shrink = ir.shape[0] * ir.shape[1] > height * width
        ir = cv2.resize(
            ir, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        )
        ir = np.clip(ir, 0.0, 1.0)
    return vis, ir


def check_output(path: Path, colour: bool, bits: int) -> None:
    """Fail early where the output format cannot hold the result."""
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ImageError(
            f"{path}: unsupported output format (use one of {', '.join(IMAGE_SUFFIXES)})"
        )
    if bits == 16 and suffix not in (".png", ".tif", ".tiff"):
        raise ImageError(f"{path}: 16-bit output needs a .png or .tif file")
    if bits == 16 and colour and suffix == ".png":
        raise ImageError(f"{path}: 16-bit colour output needs a .tif file")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or folder (links and relative paths resolved)."""
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_output_location(path: str | Path, folder: bool = False) -> None:
    """Fail unless ``path`` (an output file, or with ``folder`` an output folder) can be
    created: it is not the wrong kind of thing, its nearest existing folder is a writable
    folder, and that folder's disk is not full. Missing folders on the way are fine."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise ImageError(f"{path}: exists and is not a folder (give a folder for the outputs)")
    if not folder and path.is_dir():
        raise ImageError(f"{path}: is a folder; give an output file such as {path / 'fused.png'}")
    parent = path if folder else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ImageError(f"{path}: cannot be created, {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ImageError(f"{path}: cannot write, folder {parent} is read-only for this user")
    if hasattr(os, "statvfs") and os.statvfs(parent).f_bavail == 0:
        raise ImageError(f"{path}: cannot write, no space left on the disk of {parent}")


def check_not_input(output: str | Path, inputs: Iterable[str | Path]) -> None:
    """Refuse an output path (file or folder) that is one of ``inputs``."""
    for source in inputs:
        if _same_file(Path(output), Path(source)):
            raise ImageError(f"{output}: is the input {source}; writing there would overwrite it")


def plan_directory(
    vis_dir: Path,
    ir_dir: Path,
    out_dir: Path,
    suffix: str = ".png",
    resize: bool = False,
    bits: int = 8,
) -> list[tuple[Path, Path, Path]]:
    """Match pairs by name and check every pair and output before anything is written.

    Returns (visible, infrared, output) paths; a bad pair, an output folder that is an input
    folder or cannot be written, or an output that would replace an input raises first.
    """
    out_dir = Path(out_dir)
    check_not_input(out_dir, (vis_dir, ir_dir))
    check_output_location(out_dir, folder=True)
    pairs = match_pairs(vis=vis_dir, ir=ir_dir)
    inputs = {path.resolve(): path for _, paths in pairs for path in paths.values()}
    plan = []
    for name, paths in pairs:
        vis, _ = read_pair(paths["vis"], paths["ir"], resize)
        out = out_dir / f"{name}{suffix}"
        check_output(out, vis.ndim == 3, bits)
        if out.resolve() in inputs:
            source = inputs[out.resolve()]
            raise ImageError(f"{out}: is the input {source}; writing there would overwrite it")
        if out.is_dir():
            raise ImageError(f"{out}: is a folder, so the fused image cannot be written there")
        plan.append((paths["vis"], paths["ir"], out))
    return plan
