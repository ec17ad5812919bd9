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
from tests.helpers.models import CPU, attention_model, grey_levels_apart, scene


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
    tiled = fuse_tiled(model, vis, ir, 48, CPU, halo=32)
    assert tiled.shape == reference.shape == (2, 1, 97, 131)
    # A 32-pixel halo is below the receptive field (HALO) but the far field weighs ~1e-6 here.
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-4)
    assert grey_levels_apart(tiled, reference) <= 1


def test_tiled_equals_untiled_with_the_full_halo(model):
    """The default halo covers the receptive field: equal up to summation order."""
    vis, ir = scene(1, 59, 555, seed=1)
    reference = untiled(model, vis, ir)
    tiled = fuse_tiled(model, vis, ir, 64, CPU)
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-5)
    assert grey_levels_apart(tiled, reference) <= 1


def test_channels_last_inputs_and_model(model):
    vis, ir = scene(1, 50, 300, seed=2)
    reference = untiled(model, vis, ir)
    model_cl = attention_model().to(memory_format=torch.channels_last)
    vis, ir = (t.contiguous(memory_format=torch.channels_last) for t in (vis, ir))
    tiled = fuse_tiled(model_cl, vis, ir, 96, CPU, halo=48)
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-4)


def test_tile_bigger_than_the_image_is_the_untiled_path(model):
    vis, ir = scene(1, 61, 75, seed=3)
    reference = untiled(model, vis, ir)
    assert torch.equal(fuse_tiled(model, vis, ir, 4096, CPU), reference)
    # The two passes themselves, over one tile, are the untiled maths exactly.
    x, pads = pad_to_multiple(torch.cat([vis, ir], dim=1))
    with torch.inference_mode():
        attentions = tiled_attentions(model, x, 4096, 0, CPU)
        out = tiled_decode(model, x, 4096, 0, attentions, CPU)
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
        attentions = tiled_attentions(model, x, size, 0, CPU)
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
            fuse_tiled(model, vis, ir, 16, CPU)
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
    tiled = fuse_tiled(model, vis, ir, 512, CPU)
    assert grey_levels_apart(tiled, reference) <= 1
    torch.testing.assert_close(tiled, reference, rtol=0, atol=1e-5)
