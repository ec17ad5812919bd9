"""The network's intensity scale: images on [0, 1] in files and metrics, [-1, 1] inside CoCoNet.

The one place the two scales are converted (training inputs, losses, inference).
"""

from __future__ import annotations

import torch


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the scale the network reads and writes."""
    return x * 2 - 1


def to_unit(y: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] (no clamping)."""
    return (y + 1) / 2
