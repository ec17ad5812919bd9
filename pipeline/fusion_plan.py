"""What a ``coconet fuse`` run reads and writes, checked before a model is loaded: the input
pairs, the output locations and formats, and that no output replaces an input. Nothing here
imports torch, so a bad argument fails fast."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.core.defaults import DEFAULT_MAX_PIXELS
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import IMAGE_SUFFIXES, ImageError, match_pairs, read_image

OFFICIAL = "official"  # --model official: the authors' trained model
MODEL_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/", "file:/")
CLOUD_SCHEMES = {"s3://": "boto3", "gs://": "google.cloud.storage"}  # need these installed


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def check_model_source(source: str) -> bool:
    """Whether ``--model`` is an MLflow URI (True) or a file / ``official`` (False); anything
    else (no such file, a scheme this installation cannot read) is a one-line
    :class:`ModelSourceError` naming what is supported."""
    if source == OFFICIAL:
        return False
    if Path(source).is_file():
        return False
    if source.startswith(MODEL_SCHEMES):
        return True
    for scheme, module in CLOUD_SCHEMES.items():
        if source.startswith(scheme):
            if _installed(module):
                return True
            raise ModelSourceError(
                f"{source}: reading {scheme} needs the {module.split('.')[0]} package, which is "
                f"not installed; {SUPPORTED}"
            )
    if "://" in source or ":/" in source:
        raise ModelSourceError(f"{source}: unsupported model URI; {SUPPORTED}")
    raise ModelSourceError(
        f"{source}: no such model file (train one with `uv run dvc repro train`); {SUPPORTED}"
    )


SUPPORTED = (
    "--model takes a checkpoint file, 'official' or an MLflow URI (models:/<name>@<alias>, "
    "models:/<name>/<version>, runs:/<run_id>/model, mlflow-artifacts:/..., file:/...)"
)


class ModelSourceError(CoconetError, ValueError):
    """A ``--model`` that names nothing this installation can load."""


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def read_pair(
    vis_path: Path, ir_path: Path, resize: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Read a pair; differing sizes are an error naming both (or, with ``resize``, the infrared
    image is resized to the visible size)."""
    vis, ir = read_image(vis_path, max_pixels), read_image(ir_path, max_pixels)
    if vis.shape[:2] != ir.shape[:2]:
        if not resize:
            raise ImageError(
                f"{ir_path} is {_size(ir)} but {vis_path} is {_size(vis)} (width x height); "
                "pass --resize to resize the infrared image to the visible size"
            )
        import cv2  # only here: importing it costs every other fuse call about 0.08 s

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
    max_pixels: int = DEFAULT_MAX_PIXELS,
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
        vis, _ = read_pair(paths["vis"], paths["ir"], resize, max_pixels)
        out = out_dir / f"{name}{suffix}"
        check_output(out, vis.ndim == 3, bits)
        if out.resolve() in inputs:
            source = inputs[out.resolve()]
            raise ImageError(f"{out}: is the input {source}; writing there would overwrite it")
        if out.is_dir():
            raise ImageError(f"{out}: is a folder, so the fused image cannot be written there")
        plan.append((paths["vis"], paths["ir"], out))
    return plan
