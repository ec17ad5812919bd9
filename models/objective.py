"""CoCoNet's training objective: every loss term of a step, by name, and the total minimised.

Phase 1 minimises the adaptive fusion loss (its weighted SSIM and intensity, i.e. MSE, terms);
phase 2 adds the coupled contrastive loss times ``contrast_weight``. Both phases add the
detail (texture) term times ``detail_weight`` (0 in the paper's schedule: not the paper's loss).
:meth:`FusionObjective.forward` returns the terms as a mapping whose keys are
:attr:`FusionObjective.names` in that order, the total (:data:`TOTAL`) first. The trainer, the
logged metrics, ``reports/train_loss.csv`` and the checkpoint history follow those names, so a
new term is added here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
from torch import nn

from models.losses import AdaptiveFusionLoss, CoupledContrastiveLoss, detail_loss
from models.vgg import VGG19Features

TOTAL = "loss"


class FusionObjective(nn.Module):
    """The two losses of the paper combined per phase; images on 0..1, (B, 1, H, W)."""

    names: tuple[str, ...] = (TOTAL, "adaptive", "contrastive", "ssim", "intensity", "detail")

    def __init__(
        self,
        vgg: VGG19Features,
        contrast_weight: float = 1.0,
        ssim_weight: float = 20.0,
        c1: float = 0.5,
        c2: float = 0.75,
        ssim_window: int = 11,
        ssim_sigma: float = 1.5,
        mse_range: Literal["network", "unit"] = "network",
        ssim_padding: Literal["zeros", "reflect"] = "zeros",
        ssim_reduction: Literal["batch", "sample"] = "batch",
        gradient_padding: Literal["zeros", "replicate"] = "zeros",
        contrastive_mode: Literal["batch", "per_sample"] = "batch",
        detail_weight: float = 0.0,
        detail_gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.contrast_weight = contrast_weight
        self.detail_weight, self.detail_gain = detail_weight, detail_gain
        self.adaptive = AdaptiveFusionLoss(
            ssim_weight=ssim_weight,
            c1=c1,
            c2=c2,
            ssim_window=ssim_window,
            ssim_sigma=ssim_sigma,
            mse_range=mse_range,
            ssim_padding=ssim_padding,
            ssim_reduction=ssim_reduction,
            gradient_padding=gradient_padding,
        )
        self.contrastive = CoupledContrastiveLoss(vgg, mode=contrastive_mode)

    def forward(
        self,
        fused: torch.Tensor,
        vis: torch.Tensor,
        ir: torch.Tensor,
        mask: torch.Tensor,
        phase: int,
        autocast: Callable[[], AbstractContextManager] = nullcontext,
    ) -> dict[str, torch.Tensor]:
        """Every term (scalars, fp32) for ``fused`` (fp32) against its sources; the contrastive
        term only in phase 2, its VGG features under ``autocast()`` (e.g. bf16)."""
        parts = self.adaptive.terms(fused, vis, ir)
        ssim, intensity = parts["ssim"].mean(), parts["mse"].mean()
        adaptive = ssim + intensity
        if phase == 2 and self.contrast_weight > 0:
            with autocast():  # the VGG features in bf16; the L1 ratios come out in fp32
                contrastive = self.contrastive(fused, vis, ir, mask).float()
        else:
            contrastive = fused.new_zeros(())
        if self.detail_weight > 0:
            detail = detail_loss(fused, vis, ir, self.detail_gain).mean()
        else:
            detail = fused.new_zeros(())
        return {
            TOTAL: adaptive + self.contrast_weight * contrastive + self.detail_weight * detail,
            "adaptive": adaptive,
            "contrastive": contrastive,
            "ssim": ssim,
            "intensity": intensity,
            "detail": detail,
        }
