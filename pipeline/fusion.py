"""Fusing arrays with a loaded CoCoNet: precision, memory budget, tiles and colour.

Inference runs in eval mode under ``torch.inference_mode`` with channels-last tensors and inputs
on the network's [-1, 1] scale, in the placement's precision; a pair whose estimated working
memory exceeds the budget is fused in exact tiles (:mod:`models.tiling`); a model with an output
contrast (:mod:`models.contrast`) has the whole fused image normalised to it. A colour visible
image is fused in YCbCr: the network fuses Y with the infrared image and the chroma comes from
the visible image. ``coconet fuse``, the evaluate stage and the served MLflow model all fuse through
:func:`fuse_arrays`.
"""

from __future__ import annotations

import numpy as np
import torch

from models.coconet import CoCoNet
from models.contrast import normalise_contrast
from models.scaling import to_signed, to_unit
from models.tiling import fuse_tiled, plan_tiles
from pipeline.core.colour import rgb_to_ycbcr, ycbcr_to_rgb
from pipeline.core.imageio import ImageError, to_grey
from pipeline.core.placement import Placement


def tiles_for(height: int, width: int, placement: Placement) -> int | None:
    """The tile side for a ``height`` x ``width`` pair, or None when it is fused whole."""
    tile = plan_tiles(height, width, placement.memory_budget(), placement.dtype)
    return None if tile >= max(height, width) else tile


def _fuse_grey(model: CoCoNet, vis: np.ndarray, ir: np.ndarray, placement: Placement) -> np.ndarray:
    """Fuse two HxW 0..1 arrays with the network (on ``placement.device``, eval and inference
    mode, channels-last), whole or in tiles as the memory budget allows, in its precision."""
    device = placement.device
    tile = tiles_for(*vis.shape[:2], placement)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), placement.autocast():
            tensors = [
                to_signed(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None])
                .to(device)
                .contiguous(memory_format=torch.channels_last)
                for a in (vis, ir)
            ]
            fused = model(*tensors) if tile is None else fuse_tiled(model, *tensors, tile, device)
            fused = to_unit(fused.float()).clamp(0, 1)
            if model.output_contrast is not None:  # on the whole image, after any tiling
                fused = normalise_contrast(fused, model.output_contrast)
            return fused[0, 0].cpu().numpy()
    finally:
        model.train(was_training)


def fuse_arrays(
    model: CoCoNet, vis: np.ndarray, ir: np.ndarray, placement: Placement
) -> np.ndarray:
    """Fuse float 0..1 arrays (as ``read_image`` returns): HxW, or HxWx3 output for colour ``vis``.

    A colour visible image is fused in YCbCr (Y fused, Cb/Cr kept from the visible image); a
    colour infrared image is reduced to its luma. ``placement``: the model's device, the
    precision and the memory budget.
    """
    ir = to_grey(ir)
    if vis.shape[:2] != ir.shape[:2]:
        raise ImageError(f"visible {vis.shape[:2]} and infrared {ir.shape[:2]} sizes differ")
    if vis.ndim == 2:
        return _fuse_grey(model, vis, ir, placement)
    ycbcr = rgb_to_ycbcr(vis)
    ycbcr[..., 0] = _fuse_grey(model, ycbcr[..., 0], ir, placement)
    return ycbcr_to_rgb(ycbcr)
