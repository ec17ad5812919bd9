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


def gradient_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel Sobel magnitude |Gx| + |Gy| of (B, 1, H, W) images (kornia, replicate border)."""
    return spatial_gradient(x, mode="sobel", normalized=False).abs().sum(dim=2)


def detail_loss(
    fused: torch.Tensor, vis: torch.Tensor, ir: torch.Tensor, gain: float = 1.0
) -> torch.Tensor:
    """Per-sample mean L1 distance between the fused image's Sobel magnitude and ``gain`` times
    the larger of the two sources' at each pixel, shape (B,); images on 0..1.

    The texture term of the IVIF literature (e.g. SeAFusion's ``max(|∇vis|, |∇ir|)`` target):
    every edge of either source kept at its strongest; ``gain`` > 1 asks for sharper edges than
    either source has. Not part of the paper's loss (its weight is 0 in the paper schedule).
    """
    target = gain * torch.maximum(gradient_magnitude(vis), gradient_magnitude(ir))
    return (gradient_magnitude(fused) - target).abs().flatten(1).mean(1)


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
    whose mask is empty contribute nothing (value 0, not run through the VGG), and a sample whose
    mask covers it whole has no background term (0, where the ratio would be 0/0);
    ``reduction="mean"`` averages over the samples that have a mask (0 when none has), ``"none"``
    returns the (B,) values.

    Negatives: sample b takes the images of pairs b, b+1, …, b+M−1 (modulo the batch size), so
    with M = 3 and a batch of at least 3 these are its own pair and two others; a batch smaller
    than M draws from the pairs available, repeating pairs (a batch of one uses its own pair M
    times), as the official code's fixed split of a batch of 30 into three groups cannot.

    The anchors go through the VGG in one batch and the (no-grad) positives and negatives in
    another, each distinct masked image once: an anchor without a mask shares its unmasked
    positive and negatives with the other such anchors (see ``_ContrastPlan``).

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

    def forward(
        self,
        fused: torch.Tensor,
        vis: torch.Tensor,
        ir: torch.Tensor,
        mask: torch.Tensor,
        reduction: Reduction = "mean",
    ) -> torch.Tensor:
        if self.mode == "batch" and reduction != "mean":
            raise ValueError("mode='batch' is a ratio of batch means: only reduction='mean'")
        batch = fused.shape[0]
        has_mask = mask.flatten(1).amax(1) > 0
        chosen = has_mask.nonzero().squeeze(1)
        if self.mode == "per_sample" and not chosen.numel():
            values = fused.flatten(1).sum(1) * 0  # keeps the graph: nothing is an anchor
            return values.sum() if reduction == "mean" else _reduce(values, reduction)
        back = torch.arange(batch, device=fused.device) if self.mode == "batch" else chosen
        plan = _ContrastPlan(batch, self.negatives, has_mask, back, chosen)
        f, v, i = (to_signed(t) for t in (fused, vis, ir))
        masks = torch.cat([1 - mask, mask, torch.ones_like(mask[:1])])  # the plan's mask ids
        anchors = self.vgg.contrast_taps(f[plan.anchor_images] * masks[plan.anchor_masks])
        with torch.no_grad():  # each distinct masked source image once
            sources = torch.stack([v, i])
            targets = self.vgg.contrast_taps(
                sources[plan.target_sources, plan.target_images] * masks[plan.target_masks]
            )
        total = 0  # background + foreground terms: a batch value, or per chosen sample
        for weight, a, t in zip(self.layer_weights, anchors, targets, strict=True):
            for rows, pos, neg in plan.terms:
                if not len(rows):
                    continue
                l1_pos = (a[rows] - t[pos]).abs().flatten(1).mean(1)
                l1_neg = (a[rows].unsqueeze(0) - t[neg]).abs().flatten(2).mean(2)
                if self.mode == "batch":
                    l1_pos, l1_neg = l1_pos.mean(), l1_neg.mean(1)
                    total = total + weight * l1_pos / (l1_neg.sum(0) + self.eps)
                else:  # a patch the mask covers whole has no background: that term is 0, not 0/0
                    denominator = l1_neg.sum(0) + self.eps
                    ratio = l1_pos / denominator.clamp_min(torch.finfo(denominator.dtype).tiny)
                    total = total + weight * torch.where(denominator > 0, ratio, 0.0)
        if self.mode == "batch":
            return total
        values = fused.new_zeros(batch).index_put((chosen,), total.to(fused.dtype))
        if reduction == "mean":
            return values.sum() / has_mask.sum().clamp_min(1)
        return _reduce(values, reduction)


class _ContrastPlan:
    """Which images the contrastive loss sends through the VGG, each distinct one once.

    Mask ids index ``cat([1 - mask, mask, ones])``: ``b`` is sample b's background, ``B + b`` its
    foreground, ``2B`` no mask. A background anchor without a mask uses ``2B``, so its positive
    and negatives are the unmasked source images, which other such anchors share (pair b's
    infrared image is a negative of anchors b, b-1, ..., b-M+1). ``terms`` holds, for the
    background and the foreground term, (rows of the anchor batch, (n,) positive rows and
    (M, n) negative rows of the target batch).
    """

    def __init__(
        self,
        batch: int,
        negatives: int,
        has_mask: torch.Tensor,
        back: torch.Tensor,
        fore: torch.Tensor,
    ) -> None:
        device = has_mask.device
        none = torch.full_like(back, 2 * batch)
        back_masks = torch.where(has_mask[back], back, none)
        fore_masks = fore + batch
        self.anchor_images = torch.cat([back, fore])
        self.anchor_masks = torch.cat([back_masks, fore_masks])
        offsets = torch.arange(negatives, device=device).unsqueeze(1)
        keys = []  # (mask id * 2 + source) * batch + image; source 0 visible, 1 infrared
        for anchors, mask_ids, positive, negative in (
            (back, back_masks, 0, 1),
            (fore, fore_masks, 1, 0),
        ):
            keys.append((mask_ids * 2 + positive) * batch + anchors)
            keys.append(((mask_ids * 2 + negative) * batch + (anchors + offsets) % batch).flatten())
        unique, inverse = torch.unique(torch.cat(keys), return_inverse=True)
        self.target_images = unique % batch
        self.target_sources = (unique // batch) % 2
        self.target_masks = unique // (2 * batch)
        back_pos, back_neg, fore_pos, fore_neg = inverse.split([len(k) for k in keys])
        rows = torch.arange(len(back) + len(fore), device=device)
        self.terms = [
            (rows[: len(back)], back_pos, back_neg.view(negatives, len(back))),
            (rows[len(back) :], fore_pos, fore_neg.view(negatives, len(fore))),
        ]
