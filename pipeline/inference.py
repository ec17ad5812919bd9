"""Fusing image pairs with a trained CoCoNet: model loading, file and folder runs.

The array fusion itself (precision, memory budget, tiles, colour) is :mod:`pipeline.fusion`.
MLflow is imported only for a model URI (:mod:`pipeline.tracking.model_store`) and the official
model's downloader (requests, pooch) only for ``official``: fusing with a model file must not pay
for them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.coconet import CoCoNet
from models.state import StateDictError, check_finite, coconet_from_state
from models.weights_file import WeightsFileError, load_weights_file
from pipeline.core.defaults import DEFAULT_MAX_PIXELS, PROJECT_ROOT
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import write_image
from pipeline.core.placement import Placement
from pipeline.fusion import fuse_arrays
from pipeline.fusion_plan import (
    OFFICIAL,
    ModelSourceError,
    check_model_source,
    check_output,
    read_pair,
)

STATE_KEYS = ("state_dict", "model", "model_state_dict")


class ModelLoadError(CoconetError, ValueError):
    """A fusion model cannot be loaded from the given source."""


def _state_dict_from(checkpoint: Any, source: str) -> tuple[dict[str, torch.Tensor], str]:
    if not isinstance(checkpoint, dict):
        raise ModelLoadError(f"{source}: expected a checkpoint dict, found {type(checkpoint)}")
    vgg_weights = str(checkpoint.get("vgg_weights", "random"))
    for key in STATE_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = {k.removeprefix("module."): v for k, v in checkpoint.items()}
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(
            f"{source}: no model weights found (expected a 'state_dict' or 'model' entry)"
        )
    try:
        check_finite(state, source)
    except StateDictError as exc:
        raise ModelLoadError(str(exc)) from exc
    return state, vgg_weights


def checkpoint_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, metadata) of a checkpoint file, read with ``weights_only=True``.

    The metadata holds ``vgg_weights``, ``output_contrast`` (None where the file has none) and,
    for a converted official checkpoint, ``official`` (which VGG-19 layers the file set).
    """
    try:
        checkpoint = load_weights_file(path)
    except WeightsFileError as exc:
        raise ModelLoadError(str(exc)) from exc
    state, vgg_weights = _state_dict_from(checkpoint, str(path))
    meta = {
        "vgg_weights": vgg_weights,
        "official": checkpoint.get("official", {}),
        "output_contrast": checkpoint.get("output_contrast"),
    }
    return state, meta


def load_checkpoint_model(path: str | Path) -> CoCoNet:
    """A CoCoNet from ``artifacts/model.pt`` or a training checkpoint ("model"/"state_dict"),
    built by :func:`models.state.coconet_from_state` (no VGG download needed)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(
            f"{path}: no such model file (train one with `uv run dvc repro train`, or pass "
            "--model with a checkpoint path or an MLflow URI such as models:/coconet@champion)"
        )
    state, meta = checkpoint_state(path)
    try:
        return coconet_from_state(state, meta["vgg_weights"], str(path), meta["output_contrast"])
    except StateDictError as exc:
        raise ModelLoadError(str(exc)) from exc


def load_mlflow_model(uri: str, root: Path = PROJECT_ROOT) -> CoCoNet:
    """A CoCoNet from an MLflow model URI (``models:/coconet@champion``, ``runs:/<id>/model``)
    in the store of the project at ``root``: read straight from an embedded SQLite store or
    over a tracking server's REST API where that gives MLflow's answer
    (:mod:`pipeline.tracking.sqlite_registry`, :mod:`pipeline.tracking.rest_registry`), else
    through MLflow."""
    from pipeline.tracking.model_folder import load_model_dir
    from pipeline.tracking.sqlite_registry import model_folder

    with tempfile.TemporaryDirectory(prefix="coconet-model-") as tmp:
        try:
            folder = model_folder(uri, root)
            if folder is None:
                from pipeline.tracking.rest_registry import fetch_model  # urllib: servers only

                folder = fetch_model(uri, Path(tmp), root)
            if folder is not None:
                return load_model_dir(folder)
        except CoconetError as exc:
            raise ModelLoadError(f"{uri}: {str(exc).replace(tmp + os.sep, '')}") from exc
    from pipeline.tracking.model_store import ModelStoreError, load_registered_model

    try:
        return load_registered_model(uri, root)
    except ModelStoreError as exc:
        raise ModelLoadError(str(exc)) from exc


def load_fusion_model(source: str, placement: Placement, root: Path = PROJECT_ROOT) -> CoCoNet:
    """A CoCoNet in eval mode on ``placement.device``, from a checkpoint path, an MLflow model
    URI (in the store of the project at ``root``) or ``official`` (the authors' trained model:
    downloaded, verified, converted once, cached)."""
    if source == OFFICIAL:
        from pipeline.reference_models import official_checkpoint

        source = str(official_checkpoint())
    try:
        is_uri = check_model_source(source)
    except ModelSourceError as exc:
        raise ModelLoadError(str(exc)) from exc
    model = load_mlflow_model(source, root) if is_uri else load_checkpoint_model(source)
    return model.to(device=placement.device, memory_format=torch.channels_last).eval()


def fuse_files(
    model: CoCoNet,
    vis_path: Path,
    ir_path: Path,
    out_path: Path,
    placement: Placement,
    resize: bool = False,
    bits: int = 8,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Path:
    """Fuse one pair of files into ``out_path`` (written atomically; a failed write raises
    ImageError naming ``out_path``)."""
    vis, ir = _read_checked(vis_path, ir_path, out_path, resize, bits, max_pixels)
    return write_image(out_path, fuse_arrays(model, vis, ir, placement), bits=bits)


def _read_checked(
    vis_path: Path, ir_path: Path, out_path: Path, resize: bool, bits: int, max_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    vis, ir = read_pair(Path(vis_path), Path(ir_path), resize, max_pixels)
    check_output(Path(out_path), vis.ndim == 3, bits)
    return vis, ir


def fuse_directory(
    model: CoCoNet,
    plan: Iterable[tuple[Path, Path, Path]],
    placement: Placement,
    resize: bool = False,
    bits: int = 8,
    progress: Callable[[Iterable], Iterable] = iter,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Path]:
    """Fuse every planned pair, all or nothing: the images are written to a staging folder in
    the output folder and moved into place only when every pair is fused, so a failure (a bad
    pair, a full disk) leaves the output folder as it was. ``progress`` wraps the iteration.

    Reading and writing stay off the network's path: the next pair is read, and the previous
    result written, in a helper thread while the network fuses (one pair ahead, one write
    behind, so memory holds at most three pairs)."""
    plan = list(plan)
    if not plan:
        return []
    out_dir = plan[0][2].parent
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".coconet-partial-", dir=out_dir))

    def read(index: int) -> Future:
        vis, ir, out = plan[index]
        return helper.submit(_read_checked, vis, ir, staging / out.name, resize, bits, max_pixels)

    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="coconet-io") as helper:
            pending, written = read(0), None
            for index, (_, _, out) in enumerate(progress(plan)):
                vis, ir = pending.result()
                if index + 1 < len(plan):
                    pending = read(index + 1)
                fused = fuse_arrays(model, vis, ir, placement)
                if written is not None:
                    written.result()  # raises a failed write here, naming the file
                written = helper.submit(write_image, staging / out.name, fused, bits)
            written.result()
        for _, _, out in plan:
            os.replace(staging / out.name, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out for _, _, out in plan]
