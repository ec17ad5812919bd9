"""Networks and images the model tests share: a CoCoNet whose attention matters, a synthetic
scene, and the grey-level distance ``coconet fuse`` users see."""

from __future__ import annotations

import torch

from models.coconet import CoCoNet
from pipeline.core.placement import Placement, Precision

CPU = torch.device("cpu")
CPU_FP32 = Placement(CPU, Precision.fp32, 64 * 2**30)  # fp32 on the CPU, never tiled here


def attention_model(seed: int = 0) -> CoCoNet:
    """A random-VGG CoCoNet in eval mode whose attention matters: γ = 1 in every CA, BatchNorm
    running statistics and affine parameters moved away from their initial values."""
    torch.manual_seed(seed)
    model = CoCoNet(vgg_weights="random").eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
            if hasattr(module, "gamma"):
                module.gamma.fill_(1.0)
    return model


def scene(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (visible, infrared) pair on [-1, 1]: smooth structure, edges and noise."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
    )
    vis = 0.7 * torch.sin(7 * x + 2 * y) * torch.cos(5 * y) + 0.3 * (x > 0.2).float()
    ir = 1.6 * torch.exp(-4 * ((x - 0.3) ** 2 + (y + 0.1) ** 2)) - 0.8
    noise = 0.1 * torch.randn(2, batch, 1, height, width, generator=generator)
    return (vis + noise[0]).clamp(-1, 1), (ir + noise[1]).clamp(-1, 1)


def grey(fused: torch.Tensor) -> torch.Tensor:
    """8-bit grey levels of a [-1, 1] output, as ``coconet fuse`` writes them."""
    return torch.round(fused.float().add(1).div(2).clamp(0, 1) * 255)


def grey_levels_apart(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((grey(a) - grey(b)).abs().max())
