"""CoCoNet's losses: the adaptive fusion loss and the coupled contrastive loss.

Both take images on the 0..1 scale, shaped (B, 1, H, W). The defaults follow the official code
(github.com/runjia0124/CoCoNet: ``models/train_tasks.py``, ``models/P_loss.py``,
``pytorch_ssim``, ``utils/utils.py``); each place where this project's first version differed is
a constructor argument, so either behaviour can be chosen from params:

==========================  ==============================  ===================================
argument                    official (default)              alternative
==========================  ==============================  ===================================
``AdaptiveFusionLoss``
``mse_range``               ``"network"``: MSE on [-1, 1]   ``"unit"``: on [0, 1] (4x smaller)
``ssim_padding``            ``"zeros"`` (``F.conv2d``)      ``"reflect"`` (kornia's SSIM)
``ssim_reduction``          ``"batch"``: one SSIM over the  ``"sample"``: each sample's own SSIM
                            batch, times each sample's      with its own weight
                            weight, averaged
``gradient_padding``        ``"zeros"``, on [-1, 1], plus   ``"replicate"`` (kornia's Sobel),
                            1e-5 per pixel                  softmax denominator + 1e-8
``CoupledContrastiveLoss``
``mode``                    ``"batch"``: every anchor has   ``"per_sample"``: per-sample ratios;
                            the background term, masked     samples with an empty mask give 0
                            ones the foreground term; each  and the mean is over masked samples
                            term a ratio of batch means
``eps``                     ``0.0`` (no eps)                e.g. ``1e-8`` (the first version)
==========================  ==============================  ===================================

Not followed, as bugs of the official code: its entropy histogram is never reset between the
samples of a batch (sample b's entropy is that of samples 0..b together), it adds 1e-4 per
sample of the batch to every entropy, and it quantises by truncating ``x * 127.5 + 127.5`` to
uint8 rather than rounding (the same levels for 8-bit data, but at the mercy of float rounding).
Here each sample's entropy is that of its own 256-bin histogram of ``round(255 x)``.
The official phase 2 splits a batch of 30 into anchors 0..9 whose negatives are pairs b, b+10 and
b+20 (and computes the adaptive loss on those 10 only); here every sample is an anchor and its
negatives are pairs b, b+1, b+2 (mod B), which needs no fixed batch size. The official training
loop skips a phase-2 batch whose anchors have no mask at all (``continue``); that is the training
loop's choice, here the foreground term is then 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from kornia.filters import filter2d_separable, get_gaussian_kernel1d, spatial_gradient
from torch import nn

from models.scaling import to_signed
from models.vgg import VGG19Features

Reduction = Literal["mean", "sum", "none"]
_EPS = 1e-8
_GRADIENT_EPS = 1e-5  # the official Gradient_Net_iqa adds it to every pixel's |Gx| + |Gy|
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def ssim_per_sample(
    img1: torch.Tensor,
    img2: torch.Tensor,
    window: int = 11,
    sigma: float = 1.5,
    padding: Literal["reflect", "zeros"] = "reflect",
) -> torch.Tensor:
    """Mean SSIM per sample, images on 0..1, Gaussian window (``window`` taps, ``sigma``).

    c1=0.01², c2=0.03², the moments filtered with a normalised separable Gaussian.
    ``padding="reflect"``: the arithmetic of ``kornia.metrics.ssim`` (which fixes σ at 1.5);
    ``"zeros"``: that of the official ``pytorch_ssim`` (``F.conv2d`` with zero padding).
    """
    kernel = get_gaussian_kernel1d(window, sigma, device=img1.device, dtype=img1.dtype)
    border = {"reflect": "reflect", "zeros": "constant"}[padding]

    def blur(x: torch.Tensor) -> torch.Tensor:
        return filter2d_separable(x, kernel, kernel, border_type=border)

    c1, c2 = 0.01**2, 0.03**2
    mu1, mu2 = blur(img1), blur(img2)
    mu1_sq, mu2_sq, mu12 = mu1**2, mu2**2, mu1 * mu2
    var1 = blur(img1**2) - mu1_sq
    var2 = blur(img2**2) - mu2_sq
    cov = blur(img1 * img2) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * cov + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))
    return ssim_map.flatten(1).mean(dim=1)


def mean_gradient(
    x: torch.Tensor, padding: Literal["replicate", "zeros"] = "replicate"
) -> torch.Tensor:
    """Mean Sobel magnitude |Gx| + |Gy| per sample of a 0..1 image.

    ``padding="replicate"``: kornia's Sobel on the 0..1 image. ``"zeros"``: the official
    ``Gradient_Net_iqa`` — the image on [-1, 1] (``2x - 1``), zero padding (so the border is
    compared with mid-grey) and 1e-5 added to every pixel's magnitude.
    """
    if padding == "replicate":
        grads = spatial_gradient(x, mode="sobel", normalized=False)
        return grads.abs().sum(dim=2).flatten(1).mean(1)
    kx = torch.tensor(_SOBEL_X, dtype=x.dtype, device=x.device)
    kernels = torch.stack([kx, kx.T]).unsqueeze(1)  # (2, 1, 3, 3): Gx, Gy
    grads = F.conv2d(to_signed(x), kernels, padding=1)
    return (grads.abs().sum(dim=1) + _GRADIENT_EPS).flatten(1).mean(1)


def entropy(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Shannon entropy (bits) of each sample's own 256-bin histogram of ``round(255 x)``.

    The official ``entropy`` lets the histogram accumulate over the batch (a bug); see the module
    docstring.
    """
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
    """``L = a·Σ_k ω^g_k (1 − SSIM(F, I_k)) + Σ_k ω^e_k MSE(F, I_k)``, k ∈ {vis, ir}.

    ``g_k`` is the mean Sobel magnitude |Gx| + |Gy| of ``I_k`` and ``e_k`` its 256-bin entropy
    (per sample: the official code's histogram leaks across the batch),
    ``ω^g = softmax_k(g_k / (c1 Σ g))``, ``ω^e = softmax_k(e_k / (c2 Σ e))``, per sample; the
    weights carry no gradient. Defaults are the paper's ``a = 20``, ``c1 = 0.5``, ``c2 = 0.75``,
    SSIM window 11, σ 1.5, and the official code's arithmetic:

    * ``mse_range="network"``: the MSE on the network's [-1, 1] scale, i.e. 4x the MSE on
      [0, 1] (``"unit"``).
    * ``ssim_padding="zeros"``: SSIM with zero padding as ``pytorch_ssim`` (``"reflect"``:
      kornia's).
    * ``ssim_reduction="batch"``: ``SSIM(F, I_k)`` is one number for the whole batch (the mean of
      the SSIM map over all samples), so sample b's term is ``ω^g_k[b] (1 − SSIM_batch)``
      and the mean over b is the official loss. ``"sample"``: each sample's own SSIM.
    * ``gradient_padding="zeros"``: ``g_k`` from the official ``Gradient_Net_iqa`` (zero padding
      on [-1, 1], + 1e-5 per pixel; no eps in the softmax denominator); ``"replicate"``:
      kornia's Sobel on [0, 1], denominator + 1e-8.
    """

    def __init__(
        self,
        ssim_weight: float = 20.0,
        c1: float = 0.5,
        c2: float = 0.75,
        ssim_window: int = 11,
        ssim_sigma: float = 1.5,
        mse_range: Literal["network", "unit"] = "network",
        ssim_padding: Literal["zeros", "reflect"] = "zeros",
        ssim_reduction: Literal["batch", "sample"] = "batch",
        gradient_padding: Literal["zeros", "replicate"] = "zeros",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("mse_range", mse_range, ("network", "unit")),
            ("ssim_padding", ssim_padding, ("zeros", "reflect")),
            ("ssim_reduction", ssim_reduction, ("batch", "sample")),
            ("gradient_padding", gradient_padding, ("zeros", "replicate")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.ssim_weight, self.c1, self.c2 = ssim_weight, c1, c2
        self.ssim_window, self.ssim_sigma = ssim_window, ssim_sigma
        self.mse_range, self.ssim_padding = mse_range, ssim_padding
        self.ssim_reduction, self.gradient_padding = ssim_reduction, gradient_padding

    @torch.no_grad()
    def weights(self, vis: torch.Tensor, ir: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ω^g, ω^e), each (B, 2) with columns [vis, ir]."""
        pad = self.gradient_padding
        grads = torch.stack([mean_gradient(vis, pad), mean_gradient(ir, pad)], dim=1)
        ents = torch.stack([entropy(vis), entropy(ir)], dim=1)
        grad_eps = 0.0 if pad == "zeros" else _EPS  # the official sum is >= 2e-5
        w_g = torch.softmax(grads / (self.c1 * grads.sum(1, keepdim=True) + grad_eps), dim=1)
        w_e = torch.softmax(ents / (self.c2 * ents.sum(1, keepdim=True) + _EPS), dim=1)
        return w_g, w_e

    def _ssim(self, fused: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """(B,) SSIM values: per sample, or the batch value repeated."""
        values = ssim_per_sample(
            fused, source, self.ssim_window, self.ssim_sigma, padding=self.ssim_padding
        )
        return values.mean().expand_as(values) if self.ssim_reduction == "batch" else values

    def terms(
        self, fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-sample ``ssim`` (weighted by ``ssim_weight``) and ``mse`` terms, shape (B,).

        Their means are the loss. With ``ssim_reduction="batch"`` a sample's ``ssim`` term
        depends on the whole batch.
        """
        w_g, w_e = self.weights(vis, ir)
        ssim_loss = sum(w_g[:, k] * (1 - self._ssim(fused, src)) for k, src in enumerate((vis, ir)))
        scale = 4.0 if self.mse_range == "network" else 1.0  # (2F-1 - (2I-1))² = 4 (F-I)²
        mse = sum(
            w_e[:, k] * (fused - src).square().flatten(1).mean(1) for k, src in enumerate((vis, ir))
        )
        return {"ssim": self.ssim_weight * ssim_loss, "mse": scale * mse}

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
    is ``L1(a, p) / Σ_m L1(a, n_m)``, summed over the layers with their weights and over the
    foreground and background terms.

    ``mode="batch"`` (the official ``ContrastiveLoss_multiNegative``): ``L1`` is the mean absolute
    difference over the whole batch (``nn.L1Loss``), so each term is a ratio of batch means;
    every sample is an anchor of the background term, and the samples with a mask are anchors of
    the foreground term (an empty-mask sample adds exactly 0 to both foreground means, so it
    drops out; with no mask in the batch the foreground term is 0). Only ``reduction="mean"``
    exists. ``mode="per_sample"``: ``L1`` is per sample, each sample has its own ratios, samples
    whose mask is empty contribute nothing (value 0, not run through the VGG);
    ``reduction="mean"`` averages over the samples that have a mask (0 when none has), ``"none"``
    returns the (B,) values.

    Negatives: sample b takes the images of pairs b, b+1, …, b+M−1 (modulo the batch size), so
    with M = 3 and a batch of at least 3 these are its own pair and two others; a batch smaller
    than M draws from the pairs available, repeating pairs (a batch of one uses its own pair M
    times), as the official code's fixed split of a batch of 30 into three groups cannot.

    ``eps`` is added to each denominator (0 as in the official code). The VGG sees the images on
    the network's [-1, 1] scale, masked after scaling, as in the official code. ``vgg`` is the
    model's frozen ``VGG19Features`` (shared weights; nothing here is trained). H and W must be
    at least 16.
    """

    def __init__(
        self,
        vgg: VGG19Features,
        layer_weights: tuple[float, ...] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0),
        negatives: int = 3,
        eps: float = 0.0,
        mode: Literal["batch", "per_sample"] = "batch",
    ) -> None:
        super().__init__()
        if any(p.requires_grad for p in vgg.parameters()):
            raise ValueError("the contrastive VGG must be frozen")
        if mode not in ("batch", "per_sample"):
            raise ValueError(f"mode must be 'batch' or 'per_sample', got {mode!r}")
        self.vgg = vgg
        self.layer_weights = tuple(layer_weights)
        self.negatives = negatives
        self.eps = eps
        self.mode = mode

    def _distances(self, anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor):
        """anchor, positive (n,1,H,W); negatives (M,n,1,H,W) -> per layer (L1 to the positive
        (n,), L1 to the negatives (M, n)), each the mean absolute difference per sample."""
        m, n = negatives.shape[:2]
        anchor_taps = self.vgg.contrast_taps(anchor)
        with torch.no_grad():
            targets = self.vgg.contrast_taps(torch.cat([positive, negatives.flatten(0, 1)]))
        for a, t in zip(anchor_taps, targets, strict=True):
            pos, neg = t[:n], t[n:].unflatten(0, (m, n))
            yield (
                (a - pos).abs().flatten(1).mean(1),
                (a.unsqueeze(0) - neg).abs().flatten(2).mean(2),
            )

    def _term(self, anchor, positive, negatives) -> torch.Tensor:
        """(n,) per-sample values, or a 0-d batch value in ``"batch"`` mode."""
        total = 0
        distances = self._distances(anchor, positive, negatives)
        for weight, (l1_pos, l1_neg) in zip(self.layer_weights, distances, strict=True):
            if self.mode == "batch":
                l1_pos, l1_neg = l1_pos.mean(), l1_neg.mean(1)
            total = total + weight * l1_pos / (l1_neg.sum(0) + self.eps)
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
        f, v, i = (to_signed(t) for t in (fused, vis, ir))
        offsets = torch.arange(self.negatives, device=fused.device).unsqueeze(1)
        if self.mode == "batch":
            if reduction != "mean":
                raise ValueError("mode='batch' is a ratio of batch means: only reduction='mean'")
            everyone = torch.arange(batch, device=fused.device)
            bg = 1 - mask
            back = self._term(f * bg, v * bg, i[(everyone + offsets) % batch] * bg)
            chosen = has_mask.nonzero().squeeze(1)
            if not chosen.numel():
                return back
            fg = mask[chosen]
            neg_index = (chosen.unsqueeze(0) + offsets) % batch  # (M, n)
            return back + self._term(f[chosen] * fg, i[chosen] * fg, v[neg_index] * fg)
        values = fused.flatten(1).sum(1) * 0  # keeps the graph when no sample has a mask
        chosen = has_mask.nonzero().squeeze(1)
        if chosen.numel():
            neg_index = (chosen.unsqueeze(0) + offsets) % batch  # (M, n)
            fg = mask[chosen]
            bg = 1 - fg
            fore = self._term(f[chosen] * fg, i[chosen] * fg, v[neg_index] * fg)
            back = self._term(f[chosen] * bg, v[chosen] * bg, i[neg_index] * bg)
            values = values.index_put((chosen,), (fore + back).to(values.dtype))
        if reduction == "mean":
            return values.sum() / has_mask.sum().clamp_min(1)
        return _reduce(values, reduction)
