"""CoCoNet's losses: the adaptive fusion loss and the coupled contrastive loss.

Both take images on the 0..1 scale, shaped (B, 1, H, W).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from kornia.filters import filter2d_separable, get_gaussian_kernel1d, spatial_gradient
from torch import nn

from models.vgg import VGG19Features

Reduction = Literal["mean", "sum", "none"]
_EPS = 1e-8


def ssim_per_sample(
    img1: torch.Tensor, img2: torch.Tensor, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Mean SSIM per sample, images on 0..1, Gaussian window (``window`` taps, ``sigma``).

    Same arithmetic as ``kornia.metrics.ssim`` (reflect padding, c1=0.01², c2=0.03², the moments
    filtered with kornia's separable Gaussian), which fixes σ at 1.5; here σ is a parameter.
    """
    kernel = get_gaussian_kernel1d(window, sigma, device=img1.device, dtype=img1.dtype)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return filter2d_separable(x, kernel, kernel, border_type="reflect")

    c1, c2 = 0.01**2, 0.03**2
    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1**2, mu2**2, mu1 * mu2
    var1 = blur(img1**2) - mu1_sq
    var2 = blur(img2**2) - mu2_sq
    cov = blur(img1 * img2) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * cov + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))
    return ssim_map.flatten(1).mean(dim=1)


def mean_gradient(x: torch.Tensor) -> torch.Tensor:
    """Mean Sobel magnitude |Gx| + |Gy| per sample."""
    return spatial_gradient(x, mode="sobel", normalized=False).abs().sum(dim=2).flatten(1).mean(1)


def entropy(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Shannon entropy (bits) of each sample's own 256-bin histogram (0..1 images)."""
    levels = (x.detach().clamp(0, 1) * (bins - 1)).round().long().flatten(1)
    counts = torch.zeros(levels.shape[0], bins, dtype=torch.float64, device=x.device)
    counts.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))
    p = counts / levels.shape[1]
    return (-torch.special.xlogy(p, p).sum(dim=1) / math.log(2)).to(x.dtype)


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return values
    return values.sum() if reduction == "sum" else values.mean()


class AdaptiveFusionLoss(nn.Module):
    """``L = a·Σ_k ω^g_k (1 − SSIM(F, I_k)) + Σ_k ω^e_k MSE(F, I_k)``, k ∈ {vis, ir}, per sample.

    ``g_k`` is the mean Sobel magnitude of ``I_k`` and ``e_k`` its 256-bin entropy (per sample:
    the official code's histogram leaks across the batch), ``ω^g = softmax_k(g_k / (c1 Σ g))``,
    ``ω^e = softmax_k(e_k / (c2 Σ e))``. The weights carry no gradient. Defaults are the paper's:
    ``a = 20``, ``c1 = 0.5``, ``c2 = 0.75``, SSIM window 11, σ 1.5. The MSE is taken on the
    0..1 scale (the official code takes it on [-1, 1], i.e. 4x larger).
    """

    def __init__(
        self,
        ssim_weight: float = 20.0,
        c1: float = 0.5,
        c2: float = 0.75,
        ssim_window: int = 11,
        ssim_sigma: float = 1.5,
    ) -> None:
        super().__init__()
        self.ssim_weight, self.c1, self.c2 = ssim_weight, c1, c2
        self.ssim_window, self.ssim_sigma = ssim_window, ssim_sigma

    @torch.no_grad()
    def weights(self, vis: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ω^g, ω^e), each (B, 2) with columns [vis, ir]."""
        grads = torch.stack([mean_gradient(vis), mean_gradient(ir)], dim=1)
        ents = torch.stack([entropy(vis), entropy(ir)], dim=1)
        w_g = torch.softmax(grads / (self.c1 * grads.sum(1, keepdim=True) + _EPS), dim=1)
        w_e = torch.softmax(ents / (self.c2 * ents.sum(1, keepdim=True) + _EPS), dim=1)
        return w_g, w_e

    def terms(
        self, fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-sample ``ssim`` (weighted by ``ssim_weight``) and ``mse`` terms, shape (B,)."""
        w_g, w_e = self.weights(vis, ir)
        ssim_loss = sum(
            w_g[:, k] * (1 - ssim_per_sample(fused, src, self.ssim_window, self.ssim_sigma))
            for k, src in enumerate((vis, ir))
        )
        mse = sum(
            w_e[:, k] * (fused - src).square().flatten(1).mean(1) for k, src in enumerate((vis, ir))
        )
        return {"ssim": self.ssim_weight * ssim_loss, "mse": mse}

    def forward(
        self,
        fused: torch.Tensor,
        vis: torch.Tensor,
        ir: torch.Tensor,
        reduction: Reduction = "mean",
    ) -> torch.Tensor:
        terms = self.terms(fused, vis, ir)
        return _reduce(terms["ssim"] + terms["mse"], reduction)


class CoupledContrastiveLoss(nn.Module):
    """Coupled contrastive loss on VGG-19 relu1_1..relu5_1 features (weights 1/32 .. 1).

    Foreground (mask M): anchor ``G(F⊙M)``, positive ``G(IR⊙M)``, negatives ``G(VIS_m⊙M)``;
    background (1−M): positive the visible image, negatives the infrared ones. Per layer the term
    is ``‖a − p‖₁ / Σ_m ‖a − n_m‖₁`` (L1 = mean absolute difference per sample), summed over
    layers with their weights and over foreground and background.

    Negatives: sample b takes the images of pairs b, b+1, …, b+M−1 (modulo the batch size), so
    with M = 3 and a batch of at least 3 these are its own pair and two others; a batch smaller
    than M draws from the pairs available, repeating pairs (a batch of one uses its own pair M
    times), as the official code's fixed split of a batch of 30 into three groups cannot.

    Samples whose mask is empty contribute nothing: their per-sample value is 0 and they are not
    run through the VGG. ``reduction="mean"`` averages over the samples that have a mask (0 when
    none has); ``"none"`` returns the (B,) values. The VGG sees the images on the network's
    [-1, 1] scale, masked after scaling, as in the official code. ``vgg`` is the model's frozen
    ``VGG19Features`` (shared weights; nothing here is trained). H and W must be at least 16.
    """

    def __init__(
        self,
        vgg: VGG19Features,
        layer_weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
        negatives: int = 3,
        eps: float = _EPS,
    ) -> None:
        super().__init__()
        if any(p.requires_grad for p in vgg.parameters()):
            raise ValueError("the contrastive VGG must be frozen")
        self.vgg = vgg
        self.layer_weights = tuple(layer_weights)
        self.negatives = negatives
        self.eps = eps

    def _term(self, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor):
        """anchor, positive (n,1,H,W); negatives (M, n, 1, H, W) -> (n,) contrastive values."""
        m, n = negatives.shape[:2]
        anchor_taps = self.vgg.contrast_taps(anchor)
        with torch.no_grad():
            targets = self.vgg.contrast_taps(torch.cat([positive, negatives.flatten(0, 1)]))
        total = anchor.new_zeros(n)
        for weight, a, t in zip(self.layer_weights, anchor_taps, targets, strict=True):
            pos, neg = t[:n], t[n:].unflatten(0, (m, n))
            l1_pos = (a - pos).abs().flatten(1).mean(1)
            l1_neg = (a.unsqueeze(0) - neg).abs().flatten(2).mean(2).sum(0)
            total = total + weight * l1_pos / (l1_neg + self.eps)
        return total

    def forward(
        self,
        fused: torch.Tensor,
        vis: torch.Tensor,
        ir: torch.Tensor,
        mask: torch.Tensor,
        reduction: Reduction = "mean",
    ) -> torch.Tensor:
        batch = fused.shape[0]
        has_mask = mask.flatten(1).amax(1) > 0
        values = fused.flatten(1).sum(1) * 0  # keeps the graph when no sample has a mask
        chosen = has_mask.nonzero().squeeze(1)
        if chosen.numel():
            f, v, i = (t * 2 - 1 for t in (fused, vis, ir))
            offsets = torch.arange(self.negatives, device=chosen.device).unsqueeze(1)
            neg_index = (chosen.unsqueeze(0) + offsets) % batch  # (M, n)
            fg = mask[chosen]
            bg = 1 - fg
            fore = self._term(f[chosen] * fg, i[chosen] * fg, v[neg_index] * fg)
            back = self._term(f[chosen] * bg, v[chosen] * bg, i[neg_index] * bg)
            values = values.index_put((chosen,), fore + back)
        if reduction == "mean":
            return values.sum() / has_mask.sum().clamp_min(1)
        return _reduce(values, reduction)
