"""Channel attention (CA) and the multi-level attention module (MAM) of CoCoNet.

The CA is split into its three steps so that tiled inference (``models.tiling``) can reuse them:
``energy`` (the C x C sum over pixels, optionally over a sub-window only, so tiles can add up their
interiors), ``attention_from_energy`` (the softmax) and ``attend`` (per pixel, given the attention
matrix). ``forward`` is the three in a row, the network's one implementation of the maths.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch
from torch import nn

from models.precision import without_autocast

# (top, bottom, left, right) of a window, in pixels of the feature map it is applied to.
Window = tuple[int, int, int, int]
# A batch given whole, or as parts stacked along the batch axis (the MAM's three streams).
Stacked = torch.Tensor | Sequence[torch.Tensor]


def stack_streams(x: Sequence[torch.Tensor]) -> Stacked:
    """The parts as one tensor, once, where ``stacked_conv`` would concatenate them for every
    convolution anyway (no part needs an input gradient apart from the others); else as given."""
    if not torch.is_grad_enabled() or len({part.requires_grad for part in x}) == 1:
        return torch.cat(list(x))
    return tuple(x)


def stacked_conv(conv: nn.Module, x: Stacked) -> torch.Tensor:
    """``conv(torch.cat(x))``, with neighbouring parts that need no gradient convolved apart
    from those that do, so that backward computes no input gradient for them (the frozen VGG
    streams of a MAM): the same values, less work in training."""
    if isinstance(x, torch.Tensor):
        return conv(x)
    if not torch.is_grad_enabled() or len({part.requires_grad for part in x}) == 1:
        return conv(torch.cat(list(x)))
    runs = [torch.cat(list(run)) for _, run in groupby(x, key=lambda part: part.requires_grad)]
    return torch.cat([conv(run) for run in runs])


class ChannelAttention(nn.Module):
    """Channel attention as in the official CoCoNet ``CAM_Module``.

    q, k, v come from three 3x3 C->C convolutions; the energy ``E = q kᵀ`` is C x C over all pixels;
    ``A = softmax(rowmax(E) - E)``; the output is ``γ (A v) + v`` with the learnable scalar γ
    starting at 0. The energy and the softmax are computed in at least fp32 (under bf16 autocast
    too); ``A v`` follows autocast.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels, 3, padding=1)
        self.key = nn.Conv2d(channels, channels, 3, padding=1)
        self.value = nn.Conv2d(channels, channels, 3, padding=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def energy(self, x: Stacked, window: Window | None = None) -> torch.Tensor:
        """(B,C,C) ``q kᵀ`` summed over the pixels of ``window`` (default: all) of ``x``.

        q and k are convolved over the whole of ``x`` and then cut to the window, so a tile with
        a halo gives its interior's exact share of the whole image's energy.
        """
        q, k = stacked_conv(self.query, x), stacked_conv(self.key, x)
        if window is not None:
            top, bottom, left, right = window
            q, k = q[..., top:bottom, left:right], k[..., top:bottom, left:right]
        batch, channels = q.shape[:2]
        dtype = torch.promote_types(q.dtype, torch.float32)
        with without_autocast(q.device.type):
            q = q.reshape(batch, channels, -1).to(dtype)
            k = k.reshape(batch, channels, -1).to(dtype)
            return torch.bmm(q, k.transpose(1, 2))

    @staticmethod
    def attention_from_energy(energy: torch.Tensor) -> torch.Tensor:
        """``softmax(rowmax(E) - E)`` over the last dimension, in the energy's dtype."""
        with without_autocast(energy.device.type):
            return torch.softmax(energy.amax(dim=-1, keepdim=True) - energy, dim=-1)

    def attend(self, x: Stacked, attention: torch.Tensor) -> torch.Tensor:
        """``γ (A v) + v`` with a given (B,C,C) attention matrix; per pixel, so tiles are exact.

        Where γ needs no gradient (inference) the product and the sum are one ``baddbmm`` in the
        layout ``v`` already has (channels-last maps stay channels-last, no copies): 14% of the
        network's time on a 640x480 pair. Training keeps the separate product and sum.
        """
        v = stacked_conv(self.value, x)
        batch, channels, height, width = v.shape
        if torch.is_grad_enabled() and (self.gamma.requires_grad or v.requires_grad):
            out = torch.bmm(attention.to(v.dtype), v.reshape(batch, channels, -1))
            return self.gamma * out.reshape(v.shape) + v
        scaled = (self.gamma * attention).to(v.dtype)  # γ A, in the attention's precision
        if v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous():
            # (B, HW, C) rows: v + v (γA)ᵀ, a view of the channels-last map both ways
            rows = v.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
            out = torch.baddbmm(rows, rows, scaled.transpose(1, 2))
            return out.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
        columns = v.reshape(batch, channels, -1)
        return torch.baddbmm(columns, scaled, columns).reshape(v.shape)

    def forward(self, x: Stacked) -> torch.Tensor:
        return self.attend(x, self.attention_from_energy(self.energy(x)))


class MultiLevelAttention(nn.Module):
    """One CA shared by the U-Net, VGG-visible and VGG-infrared streams, concatenated, 3x3 3C->C.

    The three streams share the CA weights, so they run as one batch of 3B (all U-Net samples,
    then all visible, then all infrared); each has its own energy and attention matrix. In
    training the CA's convolutions take the U-Net stream apart from the frozen VGG streams
    (``stacked_conv``).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = ChannelAttention(channels)
        self.fuse = nn.Conv2d(3 * channels, channels, 3, padding=1)

    def energy(
        self, unet: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, window: Window | None = None
    ) -> torch.Tensor:
        """(3B,C,C) energies of the three streams (see ``ChannelAttention.energy``)."""
        return self.attention.energy(stack_streams((unet, vis, ir)), window)

    def forward(
        self,
        unet: torch.Tensor,
        vis: torch.Tensor,
        ir: torch.Tensor,
        attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused streams; ``attention`` (3B,C,C), when given, replaces the one from these maps."""
        streams = stack_streams((unet, vis, ir))
        if attention is None:
            attention = self.attention.attention_from_energy(self.attention.energy(streams))
        attended = self.attention.attend(streams, attention)
        return self.fuse(torch.cat(attended.chunk(3, dim=0), dim=1))
