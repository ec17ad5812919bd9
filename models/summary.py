"""Architecture summary of CoCoNet: parameter counts per part and multiply-accumulates."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from models.coconet import CoCoNet


def parameter_table(model: CoCoNet) -> list[tuple[str, int, int]]:
    """(top-level part, trainable, frozen) parameter counts, in definition order."""
    rows = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if params:
            trainable = sum(p.numel() for p in params if p.requires_grad)
            rows.append((name, trainable, sum(p.numel() for p in params) - trainable))
    return rows


def count_macs(width: int, height: int, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass at ``width`` x ``height`` (FLOPs / 2).

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products,
    the VGG side encoder and the channel attention included) on a CoCoNet built on the meta
    device, so any size costs no compute (the count depends only on the architecture).
    """
    with torch.device("meta"):
        probe = CoCoNet(vgg_weights="random").eval()
        vis = torch.zeros(batch, 1, height, width)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            probe(vis, vis)
    return counter.get_total_flops() // 2


def summary(model: CoCoNet, width: int = 640, height: int = 480) -> dict[str, object]:
    """Counts for ``coconet model``: trainable/frozen parameters, MACs at the given size."""
    return {
        "trainable": model.trainable_parameters(),
        "frozen": model.frozen_parameters(),
        "parts": parameter_table(model),
        "width": width,
        "height": height,
        "macs": count_macs(width, height),
    }
