"""Exact tiled inference (models.tiling): tiled == untiled, the halo rule, the memory planner."""

from __future__ import annotations

import pytest
import torch

from models.coconet import CoCoNet, pad_to_multiple
from models.tiling import (
    BYTES_PER_PIXEL,
    ENERGY_RADIUS,
    HALO,
    MIN_TILE,
    RECEPTIVE_RADIUS,
    TileBudgetError,
    estimate_bytes,
    fuse_tiled,
    plan_tiles,
    tile_boxes,
    tiled_attentions,
    tiled_decode,
)


def attention_model(seed: int = 0) -> CoCoNet:
    """A random-VGG CoCoNet in eval mode whose attention matters: γ = 1 in every CA, BatchNorm
    running statistics and affine parameters moved away from their initial values."""
    torch.manual_seed(seed)
    model = CoCoNet(vgg_weights="random").eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
            if hasattr(module, "gamma"):
                module.gamma.fill_(1.0)
    return model


def scene(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A (visible, infrared) pair on [-1, 1]: smooth structure, edges and noise."""
    generator = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij"
    )
    vis = 0.7 * torch.sin(7 * x + 2 * y) * torch.cos(5 * y) + 0.3 * (x > 0.2).float()
    ir = 1.6 * torch.exp(-4 * ((x - 0.3) ** 2 + (y + 0.1) ** 2)) - 0.8
    noise = 0.1 * torch.randn(2, batch, 1, height, width, generator=generator)
    return (vis + noise[0]).clamp(-1, 1), (ir + noise[1]).clamp(-1, 1)


def grey(fused: torch.Tensor) -> torch.Tensor:
    """8-bit grey levels of a [-1, 1] output, as ``coconet fuse`` writes them."""
    return torch.round(fused.float().add(1).div(2).clamp(0, 1) * 255)


def grey_levels_apart(a: torch.Tensor, b: torch.Tensor) -> int:
    return int((grey(a) - grey(b)).abs().max())


@pytest.fixture(scope="module")
def model() -> CoCoNet:
    return attention_model()


def untiled(model: CoCoNet, vis: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(vis, ir)


def test_tiles_partition_the_image_on_the_16_pixel_grid():
    boxes = list(tile_boxes(112, 160, 48, 32))
    covered = torch.zeros(112, 160, dtype=torch.int64)
    for (top, bottom, left, right), crop in boxes:
        covered[top:bottom, left:right] += 1
        assert all(edge % 16 == 0 for edge in (top, left, *crop))
        assert crop[0] <= top and crop[1] >= bottom and crop[2] <= left and crop[3] >= right
    assert len(boxes) == 3 * 4
    assert torch.all(covered == 1)
    with pytest.raises(ValueError, match="multiples of 16"):
        list(tile_boxes(112, 160, 40, 32))


def test_tiled_equals_untiled_odd_size_batch(model):
    """2-D tiling (interior tiles with a halo on all sides), odd size, a batch of two."""
    vis, ir = scene(2, 97, 131)
    reference = untiled(model, vis, ir)
    tiled = fuse_tiled(model, vis, ir, tile=48, halo=32)
    assert tiled.shape == reference.shape == (2, 1, 97, 131)
    # A 32-pixel halo is below the receptive field (HALO) but the far field weighs ~1e-6 here.
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-4)
    assert grey_levels_apart(tiled, reference) <= 1


def test_tiled_equals_untiled_with_the_full_halo(model):
    """The default halo covers the receptive field: equal up to summation order."""
    vis, ir = scene(1, 59, 555, seed=1)
    reference = untiled(model, vis, ir)
    tiled = fuse_tiled(model, vis, ir, tile=64)
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-5)
    assert grey_levels_apart(tiled, reference) <= 1


def test_channels_last_inputs_and_model(model):
    vis, ir = scene(1, 50, 300, seed=2)
    reference = untiled(model, vis, ir)
    model_cl = attention_model().to(memory_format=torch.channels_last)
    vis, ir = (t.contiguous(memory_format=torch.channels_last) for t in (vis, ir))
    tiled = fuse_tiled(model_cl, vis, ir, tile=96, halo=48)
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-4)


def test_tile_bigger_than_the_image_is_the_untiled_path(model):
    vis, ir = scene(1, 61, 75, seed=3)
    reference = untiled(model, vis, ir)
    assert torch.equal(fuse_tiled(model, vis, ir, tile=4096), reference)
    # The two passes themselves, over one tile, are the untiled maths exactly.
    x, pads = pad_to_multiple(torch.cat([vis, ir], dim=1))
    with torch.inference_mode():
        attentions = tiled_attentions(model, x, 4096, 0)
        out = tiled_decode(model, x, 4096, 0, attentions)
    top, left = pads[2], pads[0]
    assert torch.equal(out[..., top : top + 61, left : left + 75], reference)


def _support_radius(grad: torch.Tensor, top: int, bottom: int, left: int, right: int) -> int:
    """How far beyond the box [top, bottom) x [left, right) the nonzero gradient reaches."""
    rows, cols = (grad.abs().sum(dim=(0, 1)) > 0).nonzero().unbind(1)
    reach = (top - rows.min(), rows.max() - bottom + 1, left - cols.min(), cols.max() - right + 1)
    return int(max(reach))


def test_receptive_field_is_within_the_halo(model):
    """Measured: input pixels with a nonzero gradient for one output pixel (the attention matrices
    held fixed, as in pass 2), and for one deepest-scale query/key cell (pass 1)."""
    size, pixel = 240, 125
    x = scene(1, size, size, seed=4)
    x = torch.cat(x, dim=1)
    with torch.no_grad():
        attentions = tiled_attentions(model, x, size, 0)
    x.requires_grad_(True)
    fused = model.decode(model.encode(x), attentions)
    fused[0, 0, pixel, pixel].backward()
    radius = _support_radius(x.grad, pixel, pixel + 1, pixel, pixel + 1)
    assert HALO - 16 < radius <= RECEPTIVE_RADIUS <= HALO

    x.grad = None
    streams = torch.cat(model.encode(x).eighth, dim=0)
    attention = model.mam8.attention
    cell = pixel // 8
    (attention.query(streams) + attention.key(streams))[:, :, cell, cell].sum().backward()
    radius = _support_radius(x.grad, 8 * cell, 8 * cell + 8, 8 * cell, 8 * cell + 8)
    assert 32 < radius <= ENERGY_RADIUS


def test_energy_windows_must_lie_on_the_8_pixel_grid(model):
    with torch.inference_mode():
        features = model.encode(torch.zeros(1, 2, 32, 32))
        assert model.attention_energies(features, (8, 24, 0, 32))[0].shape == (3, 256, 256)
        with pytest.raises(ValueError, match="multiples of 8"):
            model.attention_energies(features, (4, 24, 0, 32))


def test_eval_mode_is_required(model):
    vis, ir = scene(1, 32, 32)
    model.train()
    try:
        with pytest.raises(ValueError, match="eval"):
            fuse_tiled(model, vis, ir, tile=16)
    finally:
        model.eval()


def test_plan_tiles_picks_the_largest_tile_that_fits():
    assert plan_tiles(1024, 1280, 64 * 2**30) == 1280  # untiled
    budget = 3 * 2**30
    tile = plan_tiles(3000, 4000, budget)
    assert tile % 16 == 0 and MIN_TILE <= tile < 4000
    assert estimate_bytes(3000, 4000, tile) <= budget < estimate_bytes(3000, 4000, tile + 16)
    assert plan_tiles(3000, 4000, budget, torch.bfloat16) >= tile
    assert set(BYTES_PER_PIXEL) == {torch.float32, torch.bfloat16}


def test_too_small_a_budget_names_the_memory_needed():
    needed = estimate_bytes(3000, 4000, MIN_TILE)
    with pytest.raises(TileBudgetError, match=r"needs at least \d+ MB") as info:
        plan_tiles(3000, 4000, 50 * 2**20)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    assert f"{needed / 2**20:.0f} MB" in str(info.value)
    with pytest.raises(TileBudgetError, match=r"\d+\.\d\d GB"):
        plan_tiles(60000, 80000, 2**30)


@pytest.mark.slow
def test_tiled_equals_untiled_1280x1024(model):
    vis, ir = scene(1, 1024, 1280, seed=5)
    reference = untiled(model, vis, ir)
    tiled = fuse_tiled(model, vis, ir, tile=512)
    assert grey_levels_apart(tiled, reference) <= 1
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-5)
