"""Fusing arrays with a loaded CoCoNet: precision, memory budget, tiles and colour.

Inference runs in eval mode under ``torch.inference_mode`` with channels-last tensors and inputs
on the network's [-1, 1] scale, in the settings' precision; a pair whose estimated working memory
exceeds the budget is fused in exact tiles (:mod:`models.tiling`). A colour visible image is
fused in YCbCr: the network fuses Y with the infrared image and the chroma comes from the visible
image. ``coconet fuse``, the evaluate stage and the served MLflow model all fuse through
:func:`fuse_arrays`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import psutil
import torch

from models.coconet import CoCoNet
from models.scaling import to_signed, to_unit
from models.tiling import fuse_tiled, plan_tiles
from pipeline.core.colour import rgb_to_ycbcr, ycbcr_to_rgb
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import ImageError, to_grey
from pipeline.core.precision import autocast_context, resolve_precision


class FusionSettingsError(CoconetError, ValueError):
    """A memory budget that cannot be read."""


@dataclass(frozen=True)
class FusionSettings:
    """How pairs are fused: ``precision`` ('fp32' or 'bf16', resolved) and an optional memory
    budget in bytes above which the pair is fused in tiles (None: never tiled)."""

    precision: str = "fp32"
    max_bytes: int | None = None


MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
MEMORY_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
SAFE_FRACTION = 0.5  # of the memory free now, as the default budget


def parse_memory(text: str) -> int:
    """'3GB', '2.5GiB', '800MB' or a plain byte count -> bytes."""
    value = text.strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    unit = value[len(number) :]
    try:
        size = float(number) * MEMORY_UNITS[unit]
    except (ValueError, KeyError):
        raise FusionSettingsError(
            f"memory size {text!r}: use a number with B, MB, GB, MiB or GiB"
        ) from None
    if size <= 0:
        raise FusionSettingsError(f"memory size {text!r}: must be positive")
    return int(size)


def default_memory_budget(device: torch.device) -> int:
    """A safe share of the memory free now: half the available RAM, 80% of a GPU's free memory."""
    if device.type == "cuda":
        return int(0.8 * torch.cuda.mem_get_info(device)[0])
    return int(SAFE_FRACTION * psutil.virtual_memory().available)


def fusion_settings(precision: str, max_memory: str | None, device: torch.device) -> FusionSettings:
    """Resolve ``--precision`` and ``--max-memory`` for ``device``."""
    budget = parse_memory(max_memory) if max_memory else default_memory_budget(device)
    return FusionSettings(resolve_precision(precision, device), budget)


def tiles_for(height: int, width: int, settings: FusionSettings) -> int | None:
    """The tile side for a ``height`` x ``width`` pair, or None when it is fused whole."""
    if settings.max_bytes is None:
        return None
    dtype = torch.bfloat16 if settings.precision == "bf16" else torch.float32
    tile = plan_tiles(height, width, settings.max_bytes, dtype)
    return None if tile >= max(height, width) else tile


def _fuse_grey(
    model: CoCoNet, vis: np.ndarray, ir: np.ndarray, settings: FusionSettings
) -> np.ndarray:
    """Fuse two HxW 0..1 arrays with the network (eval and inference mode, channels-last),
    whole or in tiles as the memory budget allows, in the settings' precision."""
    device = next(model.parameters()).device
    tile = tiles_for(*vis.shape[:2], settings)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), autocast_context(settings.precision, device):
            tensors = [
                to_signed(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None])
                .to(device)
                .contiguous(memory_format=torch.channels_last)
                for a in (vis, ir)
            ]
            fused = model(*tensors) if tile is None else fuse_tiled(model, *tensors, tile=tile)
            return to_unit(fused.float()).clamp(0, 1)[0, 0].cpu().numpy()
    finally:
        model.train(was_training)


def fuse_arrays(
    model: CoCoNet, vis: np.ndarray, ir: np.ndarray, settings: FusionSettings | None = None
) -> np.ndarray:
    """Fuse float 0..1 arrays (as ``read_image`` returns): HxW, or HxWx3 output for colour ``vis``.

    A colour visible image is fused in YCbCr (Y fused, Cb/Cr kept from the visible image); a
    colour infrared image is reduced to its luma. ``settings``: precision and memory budget
    (default fp32, never tiled).
    """
    settings = settings or FusionSettings()
    ir = to_grey(ir)
    if vis.shape[:2] != ir.shape[:2]:
        raise ImageError(f"visible {vis.shape[:2]} and infrared {ir.shape[:2]} sizes differ")
    if vis.ndim == 2:
        return _fuse_grey(model, vis, ir, settings)
    ycbcr = rgb_to_ycbcr(vis)
    ycbcr[..., 0] = _fuse_grey(model, ycbcr[..., 0], ir, settings)
    return ycbcr_to_rgb(ycbcr)
