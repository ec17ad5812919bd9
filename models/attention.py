"""Channel attention (CA) and the multi-level attention module (MAM) of CoCoNet."""

from __future__ import annotations

import torch
from torch import nn


class ChannelAttention(nn.Module):
    """Channel attention as in the official CoCoNet ``CAM_Module``.

    q, k, v come from three 3x3 C->C convolutions; the energy ``E = q kᵀ`` is C x C over all pixels;
    ``A = softmax(rowmax(E) - E)``; the output is ``γ (A v) + v`` with the learnable scalar γ
    starting at 0.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 3, padding=1)
        self.key = nn.Conv2d(channels, channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q = self.query(x).reshape(batch, channels, -1)
        k = self.key(x).reshape(batch, channels, -1)
        v = self.value(x)
        energy = torch.bmm(q, k.transpose(1, 2))
        attention = torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)
        out = torch.bmm(attention, v.reshape(batch, channels, -1)).reshape(v.shape)
        return self.gamma * out + v


class MultiLevelAttention(nn.Module):
    """One CA shared by the U-Net, VGG-visible and VGG-infrared streams, concatenated, 3x3 3C->C."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = ChannelAttention(channels)
        self.fuse = nn.Conv2d(3 * channels, channels, 3, padding=1)

    def forward(self, unet: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        # The three streams share the CA weights, so they run as one batch.
        attended = self.attention(torch.cat([unet, vis, ir], dim=0))
        return self.fuse(torch.cat(attended.chunk(3, dim=0), dim=1))
