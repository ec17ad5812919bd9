"""Adaptive fusion loss and coupled contrastive loss."""

from __future__ import annotations

import math

import kornia
import pytest
import torch
import torch.nn.functional as F

from models.losses import (
    AdaptiveFusionLoss,
    CoupledContrastiveLoss,
    detail_loss,
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


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_weights_follow_the_softmax_formula(padding):
    loss = AdaptiveFusionLoss(c1=0.5, c2=0.75, gradient_padding=padding)
    vis = _images(1, seed=5)
    ir = torch.nn.functional.avg_pool2d(_images(1, seed=6), 5, 1, 2)  # smoother: less gradient
    w_g, w_e = loss.weights(vis, ir)
    g = torch.stack([mean_gradient(vis, padding), mean_gradient(ir, padding)], dim=1)
    e = torch.stack([entropy(vis), entropy(ir)], dim=1)
    torch.testing.assert_close(w_g, torch.softmax(g / (0.5 * g.sum(1, keepdim=True)), dim=1))
    torch.testing.assert_close(w_e, torch.softmax(e / (0.75 * e.sum(1, keepdim=True)), dim=1))
    assert w_g[0, 0] > w_g[0, 1]  # the sharper source gets the larger SSIM weight


def _sobel_reference(x: torch.Tensor, mode: str) -> torch.Tensor:
    """|Gx| + |Gy| per pixel, Sobel kernels written out, padded with ``mode``."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=x.dtype)
    padded = F.pad(x, (1, 1, 1, 1), mode=mode) if mode != "zeros" else F.pad(x, (1, 1, 1, 1))
    gx = F.conv2d(padded, kx[None, None])
    gy = F.conv2d(padded, kx.T[None, None])
    return gx.abs() + gy.abs()


def test_mean_gradient_official_zero_padding_by_hand():
    """Official: Sobel |Gx| + |Gy| of 2x - 1 with zero padding, + 1e-5 per pixel.

    A constant white 4x4 image is 1 on [-1, 1]; against the zero padding each corner pixel has
    |Gx| = |Gy| = 3 and each other border pixel one of them = 4: (4·6 + 8·4) / 16 = 3.5.
    Mid-grey (0 on [-1, 1]) has no gradient at all; replicate padding sees none either.
    """
    white, grey = torch.ones(1, 1, 4, 4), torch.full((1, 1, 4, 4), 0.5)
    torch.testing.assert_close(mean_gradient(white, "zeros"), torch.tensor([3.5 + 1e-5]))
    torch.testing.assert_close(mean_gradient(grey, "zeros"), torch.tensor([1e-5]))
    torch.testing.assert_close(mean_gradient(white, "replicate"), torch.tensor([0.0]))
    # so the official weights favour the white image, ours do not
    w_g, _ = AdaptiveFusionLoss().weights(white, grey)
    g = torch.tensor([3.5 + 1e-5, 1e-5])
    torch.testing.assert_close(w_g[0], torch.softmax(g / (0.5 * g.sum()), dim=0))
    assert w_g[0, 0] == pytest.approx(math.exp(2) / (math.exp(2) + 1), abs=1e-4)
    w_g, _ = AdaptiveFusionLoss(gradient_padding="replicate").weights(white, grey)
    torch.testing.assert_close(w_g[0], torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
def test_mean_gradient_is_the_l1_sobel_magnitude(padding):
    """|Gx| + |Gy| (not sqrt(Gx² + Gy²)) against Sobel kernels written out."""
    x = _images(2, 12, seed=30)
    if padding == "zeros":
        expected = _sobel_reference(x * 2 - 1, "zeros").flatten(1).mean(1) + 1e-5
    else:
        expected = _sobel_reference(x, "replicate").flatten(1).mean(1)
    torch.testing.assert_close(mean_gradient(x, padding), expected)


def _official_ssim(img1: torch.Tensor, img2: torch.Tensor, window: int = 11) -> torch.Tensor:
    """``pytorch_ssim.ssim`` as the official code has it: 2-D window, zero padding, batch mean."""
    g = torch.exp(-((torch.arange(window, dtype=img1.dtype) - window // 2) ** 2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] @ g[None, :])[None, None]
    conv = lambda x: F.conv2d(x, w, padding=window // 2)  # noqa: E731
    mu1, mu2 = conv(img1), conv(img2)
    s1, s2 = conv(img1 * img1) - mu1**2, conv(img2 * img2) - mu2**2
    s12 = conv(img1 * img2) - mu1 * mu2
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu1 * mu2 + c1) * (2 * s12 + c2)
    return (num / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))).mean()


def test_ssim_zero_padding_matches_the_official_pytorch_ssim():
    a, b = _images(3, 24, seed=31), _images(3, 24, seed=32)
    torch.testing.assert_close(ssim_per_sample(a, b, padding="zeros").mean(), _official_ssim(a, b))
    # a constant pair: reflect padding keeps the interior value everywhere, zeros does not
    white, grey = torch.ones(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.5)
    c1 = 0.01**2
    interior = (2 * 0.5 + c1) / (1 + 0.25 + c1)
    torch.testing.assert_close(ssim_per_sample(white, grey), torch.tensor([interior]))
    assert ssim_per_sample(white, grey, padding="zeros").item() < interior - 0.05  # border


def test_ssim_batch_reduction_by_hand():
    """With a 1-tap window SSIM is ``(2xy + c1) / (x² + y² + c1)`` per pixel (no variance).

    Sample 0 is fused = vis = ir = 0.5 (SSIM 1), sample 1 fused = 1, vis = ir = 0 (SSIM
    c1 / (1 + c1)); equal sources give weights 1/2, 1/2. Official ("batch"): both samples take
    the batch SSIM, so both terms are 20 (1 − (1 + c1/(1+c1)) / 2) = 10 / (1 + c1); per sample
    they are 0 and 20 / (1 + c1).
    """
    c1 = 0.01**2
    fused = torch.cat([torch.full((1, 1, 4, 4), 0.5), torch.ones(1, 1, 4, 4)])
    src = torch.cat([torch.full((1, 1, 4, 4), 0.5), torch.zeros(1, 1, 4, 4)])
    kwargs = {"ssim_window": 1, "ssim_sigma": 1.0}
    official = AdaptiveFusionLoss(**kwargs).terms(fused, src, src)["ssim"]
    torch.testing.assert_close(official, torch.full((2,), 10 / (1 + c1)))
    ours = AdaptiveFusionLoss(ssim_reduction="sample", **kwargs).terms(fused, src, src)["ssim"]
    torch.testing.assert_close(ours, torch.tensor([0.0, 20 / (1 + c1)]))


def test_mse_on_the_network_scale_by_hand():
    """fused 0.75, sources 0.25: (0.5 − (−0.5))² = 1 on [-1, 1] (official), 0.25 on [0, 1]."""
    fused, src = torch.full((1, 1, 8, 8), 0.75), torch.full((1, 1, 8, 8), 0.25)
    official = AdaptiveFusionLoss().terms(fused, src, src)["mse"]
    torch.testing.assert_close(official, torch.tensor([1.0]))
    unit = AdaptiveFusionLoss(mse_range="unit").terms(fused, src, src)["mse"]
    torch.testing.assert_close(unit, torch.tensor([0.25]))


def test_adaptive_loss_is_the_official_formula():
    """Defaults: ``loss_fc`` of the official ``train_tasks.py`` written out."""
    vis, ir, fused = _images(3, 24, seed=33), _images(3, 24, seed=34) ** 2, _images(3, 24, seed=35)
    w_g, w_e = AdaptiveFusionLoss().weights(vis, ir)
    f, v, i = fused * 2 - 1, vis * 2 - 1, ir * 2 - 1
    mse = torch.stack(
        [w_e[b, 0] * F.mse_loss(f[b], v[b]) + w_e[b, 1] * F.mse_loss(f[b], i[b]) for b in range(3)]
    ).mean()
    ssim = (
        w_g[:, 0] * (1 - _official_ssim(vis, fused)) + w_g[:, 1] * (1 - _official_ssim(ir, fused))
    ).mean()
    torch.testing.assert_close(AdaptiveFusionLoss()(fused, vis, ir), 20 * ssim + mse)
    ours = AdaptiveFusionLoss(
        mse_range="unit",
        ssim_padding="reflect",
        ssim_reduction="sample",
        gradient_padding="replicate",
    )
    assert not torch.allclose(ours(fused, vis, ir), 20 * ssim + mse)


def test_adaptive_loss_rejects_unknown_switches():
    with pytest.raises(ValueError, match="ssim_padding"):
        AdaptiveFusionLoss(ssim_padding="same")


OURS = {
    "mse_range": "unit",
    "ssim_padding": "reflect",
    "ssim_reduction": "sample",
    "gradient_padding": "replicate",
}


def test_adaptive_loss_value_and_reductions():
    loss = AdaptiveFusionLoss(**OURS)
    vis, ir = _images(2, 32, seed=7), _images(2, 32, seed=8)
    assert loss(vis, vis, vis).abs() < 1e-4  # F = both sources: no loss
    assert AdaptiveFusionLoss()(vis, vis, vis).abs() < 1e-4
    per_sample = loss(vis, vis, ir, reduction="none")
    assert per_sample.shape == (2,)
    torch.testing.assert_close(loss(vis, vis, ir), per_sample.mean())
    w_g, w_e = loss.weights(vis, ir)
    ssim_ir = ssim_per_sample(vis, ir)
    mse_ir = (vis - ir).square().flatten(1).mean(1)
    torch.testing.assert_close(per_sample, 20 * w_g[:, 1] * (1 - ssim_ir) + w_e[:, 1] * mse_ir)


@pytest.mark.parametrize("switches", [{}, OURS], ids=["official", "ours"])
def test_adaptive_loss_gradcheck(switches):
    loss = AdaptiveFusionLoss(ssim_window=5, ssim_sigma=1.0, **switches)
    vis, ir = _images(2, 8, seed=9, dtype=torch.float64), _images(2, 8, 10, torch.float64)
    fused = _images(2, 8, seed=11, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss(f, vis, ir), (fused,))


# --- detail (texture) term ------------------------------------------------------------------


def test_detail_loss_is_zero_when_the_fused_image_has_the_strongest_edges():
    flat, edge = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    edge[..., 4:] = 1.0
    assert detail_loss(edge, flat, edge).item() == 0  # the infrared's edge, kept at full strength
    assert detail_loss(edge, edge, flat).item() == 0  # the visible's
    assert detail_loss(flat, flat, edge).item() > 0  # an edge lost costs
    # gain 2 asks for twice the edge: the source itself now falls short, twice the edge meets it
    assert detail_loss(edge, flat, edge, gain=2.0).item() > 0
    assert torch.allclose(detail_loss(2 * edge, flat, edge, gain=2.0), torch.zeros(1))


def test_detail_loss_per_sample_and_gradcheck():
    vis, ir = _images(3, 8, seed=30), _images(3, 8, seed=31)
    fused = _images(3, 8, seed=32)
    values = detail_loss(fused, vis, ir, gain=1.2)
    assert values.shape == (3,)
    assert torch.allclose(values[1:], detail_loss(fused[1:], vis[1:], ir[1:], gain=1.2))
    vis64, ir64 = vis.double(), ir.double()
    fused64 = fused.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda f: detail_loss(f, vis64, ir64, 1.2).sum(), (fused64,))


# --- coupled contrastive loss ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_contrastive_lower_for_infrared_foreground(vgg, mode):
    loss = CoupledContrastiveLoss(vgg, mode=mode)
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


def test_contrastive_per_sample_mode_with_a_mask_covering_a_whole_patch(vgg):
    """Its background is empty, so its background ratio would be 0/0 (a NaN that stopped a cpu
    run): that term is 0, its foreground term and every other sample are unchanged."""
    loss = CoupledContrastiveLoss(vgg, mode="per_sample")
    fused = _images(3, seed=40).requires_grad_()
    vis, ir = _images(3, seed=41), _images(3, seed=42)
    mask = _square_mask(3)
    mask[1] = 1.0
    values = loss(fused, vis, ir, mask, reduction="none")
    assert torch.isfinite(values).all() and values[1] > 0
    alone = loss(fused[1:2], vis[1:2], ir[1:2], mask[1:2], reduction="none")
    assert torch.isfinite(alone).all()
    values.sum().backward()
    assert torch.isfinite(fused.grad).all()


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_contrastive_negatives_for_small_batches(vgg, batch):
    loss = CoupledContrastiveLoss(vgg, mode="per_sample")
    fused, vis, ir = _images(batch, seed=14), _images(batch, seed=15), _images(batch, seed=16)
    mask = _square_mask(batch)
    values = loss(fused, vis, ir, mask, reduction="none")
    for b in range(batch):
        negatives = [(b + j) % batch for j in range(3)]  # own pair, then the next ones, wrapped
        torch.testing.assert_close(values[b], _reference(vgg, fused, vis, ir, mask, b, negatives))


def test_contrastive_per_sample_mode_skips_samples_without_mask(vgg):
    loss = CoupledContrastiveLoss(vgg, mode="per_sample")
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


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_contrastive_gradcheck(mode):
    vgg64 = VGG19Features("random").double()
    with torch.no_grad():  # non-zero biases keep every ReLU away from its kink
        for param in vgg64.features.parameters():
            if param.ndim == 1:
                param.uniform_(-0.1, 0.1)
    loss = CoupledContrastiveLoss(vgg64, mode=mode)
    vis, ir = _images(2, 16, 20, torch.float64), _images(2, 16, 21, torch.float64)
    mask = 0.1 + 0.8 * _images(2, 16, 22, torch.float64)  # soft mask: no exact zeros
    fused = _images(2, 16, seed=23, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: loss(f, vis, ir, mask), (fused,), fast_mode=True)


def _official_contrastive(vgg, fused, vis, ir, mask, negatives, terms=("fore", "back")):
    """``ContrastiveLoss_multiNegative`` fore + back as ``finetune_ep`` calls it, on [-1, 1].

    ``negatives[j]`` is the index of each anchor's j-th negative pair (the official code: b,
    b+10, b+20 of a batch of 30; here the same scheme as the loss).
    """
    f, v, i = fused * 2 - 1, vis * 2 - 1, ir * 2 - 1
    weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    # the VGG layers the official Vgg19 returns: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
    stops = (2, 7, 12, 21, 30)

    def taps(x):
        return [vgg.features[:stop](x) for stop in stops]

    total = 0.0
    for term, anchor, pos, negs in (
        ("fore", f * mask, i * mask, [v[n] * mask for n in negatives]),
        ("back", f * (1 - mask), v * (1 - mask), [i[n] * (1 - mask) for n in negatives]),
    ):
        if term not in terms:
            continue
        o, p, ns = taps(anchor), taps(pos), [taps(n) for n in negs]
        for k, w in enumerate(weights):
            num = F.l1_loss(o[k], p[k])
            total = total + w * num / sum(F.l1_loss(o[k], n[k]) for n in ns)
    return total


def test_contrastive_batch_mode_is_the_official_formula(vgg):
    """Every anchor has the background term, the masked ones the foreground term, each term a
    ratio of batch means; an empty mask adds zeros to the foreground means (so drops out)."""
    fused, vis, ir = _images(3, seed=40), _images(3, seed=41), _images(3, seed=42)
    mask = _square_mask(3)
    mask[1] = 0
    negatives = [[(b + j) % 3 for b in range(3)] for j in range(3)]
    expected = _official_contrastive(vgg, fused, vis, ir, mask, negatives)
    value = CoupledContrastiveLoss(vgg)(fused, vis, ir, mask)
    torch.testing.assert_close(value, expected)
    per_sample = CoupledContrastiveLoss(vgg, mode="per_sample")(fused, vis, ir, mask)
    assert not torch.allclose(value, per_sample)
    with pytest.raises(ValueError, match="reduction"):
        CoupledContrastiveLoss(vgg)(fused, vis, ir, mask, reduction="none")


def test_contrastive_batch_mode_pulls_empty_mask_samples_to_the_visible_image(vgg):
    fused, vis, ir = _images(3, seed=43), _images(3, seed=44), _images(3, seed=45)
    fused.requires_grad_()
    mask = _square_mask(3)
    mask[1] = 0
    official = CoupledContrastiveLoss(vgg)
    official(fused, vis, ir, mask).backward()
    assert fused.grad[1].abs().sum() > 0  # background term for the sample without a mask
    fused.grad = None
    CoupledContrastiveLoss(vgg, mode="per_sample")(fused, vis, ir, mask).backward()
    assert fused.grad[1].abs().sum() == 0
    # no mask at all: the background term alone (the official fore term would be 0 / 0)
    empty = torch.zeros_like(mask)
    negatives = [[(b + j) % 3 for b in range(3)] for j in range(3)]
    with torch.no_grad():
        background = _official_contrastive(vgg, fused, vis, ir, empty, negatives, ("back",))
        torch.testing.assert_close(official(fused, vis, ir, empty), background)
        assert CoupledContrastiveLoss(vgg, mode="per_sample")(fused, vis, ir, empty) == 0


@pytest.mark.parametrize("mode", ["batch", "per_sample"])
def test_contrastive_loss_runs_under_bf16_autocast(mode):
    """Training autocasts the contrastive VGG to bf16; both modes must accept it."""
    torch.manual_seed(0)
    vgg = VGG19Features("random")
    fused = torch.rand(4, 1, 32, 32, requires_grad=True)
    vis, ir = torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32)
    mask = torch.zeros(4, 1, 32, 32)
    mask[::2, :, 8:16, 8:16] = 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = CoupledContrastiveLoss(vgg, mode=mode)(fused, vis, ir, mask).float()
    loss.backward()
    assert torch.isfinite(loss) and fused.grad is not None


def test_contrastive_sends_each_distinct_image_through_the_vgg_once():
    """Batch mode: anchors without a mask share their unmasked positives and negatives."""
    from models.losses import _ContrastPlan

    batch = 6
    has_mask = torch.tensor([True, False, False, False, False, False])
    everyone, chosen = torch.arange(batch), has_mask.nonzero().squeeze(1)
    plan = _ContrastPlan(batch, 3, has_mask, everyone, chosen)
    # unmasked: 5 visible positives and all 6 infrared images as negatives; sample 0's
    # background: 1 + 3, its foreground: 1 + 3
    assert len(plan.target_images) == 5 + 6 + 4 + 4
    assert len(plan.anchor_images) == batch + 1
    rows, pos, neg = plan.terms[0]
    assert neg.shape == (3, batch) and pos.shape == (batch,)
    for b in range(1, batch):  # unmasked anchor b: its own visible, infrared b, b+1, b+2
        assert plan.target_masks[pos[b]] == 2 * batch and plan.target_sources[pos[b]] == 0
        negatives = plan.target_images[neg[:, b]].tolist()
        assert negatives == [(b + k) % batch for k in range(3)]
        assert (plan.target_sources[neg[:, b]] == 1).all()
