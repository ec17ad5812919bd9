"""The CoCoNet fusion network (Liu et al., IJCV 2023), as its paper and official code define it.

Parameter count (``trainable_parameters``): **6,789,764** trainable parameters — every convolution
weight and bias of the U-Net, the three multi-level attention modules (their CA q/k/v convolutions
and γ, and the 3C->C fusion convolutions), the decoder, the 1x1 output convolution, and the
BatchNorm affine weights and biases. Not counted: BatchNorm running statistics (buffers) and the
frozen VGG-19 (20,023,232 parameters: the whole 16-conv ``features`` stack with its one-channel
first convolution, kept so the contrastive loss shares it). The official code also builds a
32-channel CA that its forward pass never uses; it is left out here, which is why the count is the
paper's ≈ 6.79 M.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.attention import MultiLevelAttention, Window
from models.contrast import OutputContrast
from models.precision import without_autocast
from models.vgg import VGG19Features

PAD_MULTIPLE = 16


def conv_block(in_channels: int, out_channels: int, norm: bool = True) -> nn.Sequential:
    """Conv3x3 -> LeakyReLU(0.2) -> BatchNorm, in that order (as the official code)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class UpConv(nn.Module):
    """Bilinear x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


class Features(NamedTuple):
    """What the decoder needs: the full-resolution skip and, per MAM scale, the three streams
    (U-Net, VGG visible, VGG infrared)."""

    full: torch.Tensor
    half: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    quarter: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    eighth: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def check_pair(vis: torch.Tensor, ir: torch.Tensor) -> None:
    """Both inputs must be (B,1,H,W) of one shape."""
    if vis.shape != ir.shape or vis.ndim != 4 or vis.shape[1] != 1:
        raise ValueError(
            f"expected two (B,1,H,W) tensors, got {tuple(vis.shape)}, {tuple(ir.shape)}"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, tuple]:
    """Reflect-pad H and W up to a multiple (replicate where the image is too small to reflect)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if not any(pads):
        return x, pads
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, pads, mode=mode), pads


def crop_padding(x: torch.Tensor, pads: tuple) -> torch.Tensor:
    """Undo ``pad_to_multiple``."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    return x[..., top : height - bottom, left : width - right]


class CoCoNet(nn.Module):
    """CoCoNet: U-Net with multi-level attention over a frozen VGG-19 side encoder.

    ``forward(vis, ir)``: (B,1,H,W) tensors in [-1, 1], any H and W (reflect-padded to a multiple of
    16 and cropped back) -> fused (B,1,H,W) in [-1, 1] (tanh). Use eval mode for inference.

    Encoder: 2->32->32 at full resolution, then max-pool stages 64,64 (H/2), 128,128 (H/4) and
    256 (H/8). MAMs at H/8 (feeding a 256->256 bottleneck block), H/4 and H/2 (concatenated with
    the decoder's upsample+conv features); full resolution gets a plain skip; output 1x1 conv 32->1
    and tanh. As in the official code, the last 32->32 convolution has no BatchNorm.

    Parameters: 6,789,764 trainable, 20,023,232 frozen (VGG-19); see the module docstring.
    The state dict holds the VGG tensors too, so a checkpoint restores exactly offline: build
    with ``vgg_weights="random"`` and load it. ``fusion_only`` keeps only the VGG-19 layers the
    forward pass runs (conv1_1 .. conv3_4, 2,324,416 frozen parameters): what a fusion model
    file holds; training needs the whole VGG for the contrastive loss.
    """

    def __init__(self, vgg_weights: str = "imagenet", fusion_only: bool = False) -> None:
        super().__init__()
        self.vgg_weights = vgg_weights
        # the fused image's per-image mean and spread (models/contrast.py); None: as the network
        # gives it. Applied by whoever assembles a whole fused image (pipeline/fusion.py).
        self.output_contrast: OutputContrast | None = None
        self.vgg = VGG19Features(vgg_weights, fusion_only=fusion_only)
        self.pool = nn.MaxPool2d(2)
        self.enc1 = nn.Sequential(conv_block(2, 32), conv_block(32, 32))
        self.enc2 = nn.Sequential(conv_block(32, 64), conv_block(64, 64))
        self.enc3 = nn.Sequential(conv_block(64, 128), conv_block(128, 128))
        self.enc4 = conv_block(128, 256)
        self.mam8 = MultiLevelAttention(256)
        self.bottleneck = conv_block(256, 256)
        self.up4 = UpConv(256, 128)
        self.mam4 = MultiLevelAttention(128)
        self.dec4 = nn.Sequential(conv_block(256, 128), conv_block(128, 128))
        self.up2 = UpConv(128, 64)
        self.mam2 = MultiLevelAttention(64)
        self.dec2 = nn.Sequential(conv_block(128, 64), conv_block(64, 64))
        self.up1 = UpConv(64, 32)
        self.dec1 = nn.Sequential(conv_block(64, 32), conv_block(32, 32, norm=False))
        self.out = nn.Conv2d(32, 1, 1)

    def forward(self, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
        check_pair(vis, ir)
        x, pads = pad_to_multiple(torch.cat([vis, ir], dim=1))
        return crop_padding(self.decode(self.encode(x)), pads)

    # The three steps below are the network; ``forward`` and ``models.tiling`` both use them.

    def encode(self, x: torch.Tensor) -> Features:
        """U-Net encoder and VGG side taps of a padded (B,2,H,W) [visible, infrared] tensor."""
        # The VGG runs once over both sources, batched.
        vgg_half, vgg_quarter, vgg_eighth = self.vgg.side_taps(torch.cat(x.split(1, dim=1), dim=0))
        vis2, ir2 = vgg_half.chunk(2, dim=0)
        vis4, ir4 = vgg_quarter.chunk(2, dim=0)
        vis8, ir8 = vgg_eighth.chunk(2, dim=0)

        if self.training:
            e1 = self.enc1(x)
        else:  # full resolution in fp32 at inference, as the decoder tail (see ``decode``)
            with without_autocast(x.device.type):
                e1 = self.enc1(x.float())
        e2 = self.enc2(self.pool(e1))
        e4 = self.enc3(self.pool(e2))
        e8 = self.enc4(self.pool(e4))
        return Features(e1, (e2, vis2, ir2), (e4, vis4, ir4), (e8, vis8, ir8))

    def attention_energies(
        self, features: Features, window: Window | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Channel-attention energies (3B,C,C) of mam8, mam4, mam2, in at least fp32.

        ``window`` (top, bottom, left, right) in full-resolution pixels of ``features``' input,
        each a multiple of 8, restricts the sums to that window (a tile's interior).
        """
        if window is not None and any(edge % 8 for edge in window):
            raise ValueError(f"window edges must be multiples of 8, got {window}")
        energies = []
        for scale, mam, streams in (
            (8, self.mam8, features.eighth),
            (4, self.mam4, features.quarter),
            (2, self.mam2, features.half),
        ):
            scaled = None if window is None else tuple(edge // scale for edge in window)
            energies.append(mam.energy(*streams, window=scaled))
        return tuple(energies)

    def decode(
        self,
        features: Features,
        attentions: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Decoder and output (B,1,H,W) in [-1, 1]; ``attentions`` (mam8, mam4, mam2), when
        given, are used instead of the ones from these features (tiles of a larger image)."""
        att8, att4, att2 = attentions or (None, None, None)
        d8 = self.bottleneck(self.mam8(*features.eighth, attention=att8))
        d4 = self.dec4(torch.cat([self.up4(d8), self.mam4(*features.quarter, attention=att4)], 1))
        d2 = self.dec2(torch.cat([self.up2(d4), self.mam2(*features.half, attention=att2)], 1))
        tail = torch.cat([self.up1(d2), features.full], dim=1)
        if self.training:
            return torch.tanh(self.out(self.dec1(tail)))
        # At inference the full-resolution layers (the encoder's enc1, whose features reach the
        # tail through the skip, and the tail: dec1, out, tanh) run in fp32 even under bf16
        # autocast: bf16 in either puts single pixels 3-4 grey levels from fp32, the more so once
        # an output contrast stretches the image (README "Fidelity"); training keeps autocast's.
        with without_autocast(tail.device.type):
            return torch.tanh(self.out(self.dec1(tail.float())))

    def trainable_parameters(self) -> int:
        """Number of parameters the optimiser updates (VGG excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def frozen_parameters(self) -> int:
        """Number of frozen parameters (the VGG-19)."""
        return sum(p.numel() for p in self.parameters() if not p.requires_grad)
