"""Adaptive fusion loss and coupled contrastive loss."""

from __future__ import annotations

import kornia
import pytest
import torch

from models.losses import (
    AdaptiveFusionLoss,
    CoupledContrastiveLoss,
    entropy,
    mean_gradient,
    ssim_per_sample,
)
from models.vgg import VGG19Features


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features("random")


def _images(batch: int, size: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 1, size, size, generator=generator, dtype=dtype)


def _square_mask(batch: int, size: int = 16) -> torch.Tensor:
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 4 : size // 2, size // 4 : 3 * size // 4] = 1
    return mask


# --- adaptive fusion loss -------------------------------------------------------------------


def test_ssim_matches_kornia_at_sigma_1_5():
    a, b = _images(3, 32, seed=1), _images(3, 32, seed=2)
    expected = kornia.metrics.ssim(a, b, 11, eps=0.0).flatten(1).mean(1)
    torch.testing.assert_close(ssim_per_sample(a, b, 11, 1.5), expected)
    assert not torch.allclose(ssim_per_sample(a, b, 11, 3.0), expected)


def test_entropy_per_sample():
    flat = torch.full((1, 1, 16, 16), 0.5)
    ramp = (torch.arange(256, dtype=torch.float32) / 255).reshape(1, 1, 16, 16)
    torch.testing.assert_close(entropy(torch.cat([flat, ramp])), torch.tensor([0.0, 8.0]))


def test_entropy_weights_do_not_depend_on_the_rest_of_the_batch():
    loss = AdaptiveFusionLoss()
    vis, ir = _images(3, seed=3), _images(3, seed=4) ** 3
    other_vis = torch.full_like(vis[:2], 0.2)
    other_ir = torch.zeros_like(ir[:2])
    w_g, w_e = loss.weights(vis, ir)
    w_g2, w_e2 = loss.weights(torch.cat([vis[:1], other_vis]), torch.cat([ir[:1], other_ir]))
    torch.testing.assert_close(w_e[0], w_e2[0])
    torch.testing.assert_close(w_g[0], w_g2[0])
    torch.testing.assert_close(w_e.sum(1), torch.ones(3))


def test_weights_follow_the_softmax_formula():
    loss = AdaptiveFusionLoss(c1=0.5, c2=0.75)
    vis = _images(1, seed=5)
    ir = torch.nn.functional.avg_pool2d(_images(1, seed=6), 5, 1, 2)  # smoother: less gradient
    w_g, w_e = loss.weights(vis, ir)
    g = torch.stack([mean_gradient(vis), mean_gradient(ir)], dim=1)
    e = torch.stack([entropy(vis), entropy(ir)], dim=1)
    torch.testing.assert_close(w_g, torch.softmax(g / (0.5 * g.sum(1, keepdim=True)), dim=1))
    torch.testing.assert_close(w_e, torch.softmax(e / (0.75 * e.sum(1, keepdim=True)), dim=1))
    assert w_g[0, 0] > w_g[0, 1]  # the sharper source gets the larger SSIM weight


def test_adaptive_loss_value_and_reductions():
    loss = AdaptiveFusionLoss()
    vis, ir = _images(2, 32, seed=7), _images(2, 32, seed=8)
    assert loss(vis, vis, vis).abs() < 1e-4  # F = both sources: no loss
    per_sample = loss(vis, vis, ir, reduction="none")
    assert per_sample.shape == (2,)
    torch.testing.assert_close(loss(vis, vis, ir), per_sample.mean())
    w_g, w_e = loss.weights(vis, ir)
    ssim_ir = ssim_per_sample(vis, ir)
    mse_ir = (vis - ir).square().flatten(1).mean(1)
    torch.testing.assert_close(per_sample, 20 * w_g[:, 1] * (1 - ssim_ir) + w_e[:, 1] * mse_ir)


def test_adaptive_loss_gradcheck():
    loss = AdaptiveFusionLoss(ssim_window=5, ssim_sigma=1.0)
    vis, ir = _images(1, 8, seed=9, dtype=torch.float64), _images(1, 8, 10, torch.float64)
    fused = _images(1, 8, seed=11, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss(f, vis, ir), (fused,))


# --- coupled contrastive loss ---------------------------------------------------------------


def test_contrastive_lower_for_infrared_foreground(vgg):
    loss = CoupledContrastiveLoss(vgg)
    vis, ir = _images(3, seed=12), _images(3, seed=13)
    mask = _square_mask(3)
    good = ir * mask + vis * (1 - mask)  # infrared targets, visible background
    bad = vis.clone()  # visible everywhere
    assert loss(good, vis, ir, mask) < loss(bad, vis, ir, mask)
    assert loss(good, vis, ir, mask) < loss(ir * mask + ir * (1 - mask), vis, ir, mask)


def _reference(vgg, fused, vis, ir, mask, b, negatives):
    """Per-sample value written out from the definition, for sample b and given negatives."""
    to_net = lambda t: t * 2 - 1  # noqa: E731
    f, v, i = to_net(fused), to_net(vis), to_net(ir)
    weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    total = 0.0
    for m, pos, negs in ((mask[b], i[b], v[negatives]), (1 - mask[b], v[b], i[negatives])):
        anchor = vgg.contrast_taps((f[b] * m)[None])
        positive = vgg.contrast_taps((pos * m)[None])
        neg_taps = [vgg.contrast_taps((n * m)[None]) for n in negs]
        for k, w in enumerate(weights):
            num = (anchor[k] - positive[k]).abs().mean()
            den = sum((anchor[k] - n[k]).abs().mean() for n in neg_taps)
            total = total + w * num / den
    return total


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_contrastive_negatives_for_small_batches(vgg, batch):
    loss = CoupledContrastiveLoss(vgg)
    fused, vis, ir = _images(batch, seed=14), _images(batch, seed=15), _images(batch, seed=16)
    mask = _square_mask(batch)
    values = loss(fused, vis, ir, mask, reduction="none")
    for b in range(batch):
        negatives = [(b + j) % batch for j in range(3)]  # own pair, then the next ones, wrapped
        torch.testing.assert_close(values[b], _reference(vgg, fused, vis, ir, mask, b, negatives))


def test_contrastive_skips_samples_without_mask(vgg):
    loss = CoupledContrastiveLoss(vgg)
    vis, ir = _images(3, seed=17), _images(3, seed=18)
    fused = _images(3, seed=19).requires_grad_()
    mask = _square_mask(3)
    mask[1] = 0
    values = loss(fused, vis, ir, mask, reduction="none")
    assert values[1] == 0 and values[0] > 0 and values[2] > 0
    mean = loss(fused, vis, ir, mask)
    torch.testing.assert_close(mean, values.sum() / 2)
    mean.backward()
    assert torch.isfinite(fused.grad).all()
    assert fused.grad[1].abs().sum() == 0 and fused.grad[0].abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    none = loss(fused, vis, ir, torch.zeros_like(mask))
    assert none == 0 and none.requires_grad


def test_contrastive_needs_a_frozen_vgg():
    vgg = VGG19Features("random")
    vgg.features[0].weight.requires_grad_(True)
    with pytest.raises(ValueError, match="frozen"):
        CoupledContrastiveLoss(vgg)


def test_contrastive_gradcheck(vgg):
    vgg64 = VGG19Features("random").double()
    with torch.no_grad():  # non-zero biases keep every ReLU away from its kink
        for param in vgg64.features.parameters():
            if param.ndim == 1:
                param.uniform_(-0.1, 0.1)
    loss = CoupledContrastiveLoss(vgg64)
    vis, ir = _images(2, 16, 20, torch.float64), _images(2, 16, 21, torch.float64)
    mask = 0.1 + 0.8 * _images(2, 16, 22, torch.float64)  # soft mask: no exact zeros
    fused = _images(2, 16, seed=23, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss(f, vis, ir, mask), (fused,), fast_mode=True)
