"""Precision and memory budget of fusion: bf16 within 2 grey levels of fp32, exact tiling when a
pair exceeds the budget, a clear error when even tiles cannot fit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models import tiling
from models.tiling import TileBudgetError, estimate_bytes
from pipeline import fusion
from pipeline.core.imageio import read_image, to_uint8, write_image
from pipeline.core.placement import Placement, Precision
from pipeline.fusion import fuse_arrays, tiles_for
from pipeline.tracking.served_model import FusionModel
from tests.helpers.models import CPU

WHOLE = Placement(CPU, Precision.fp32, 64 * 2**30)  # fp32, never tiled at these sizes


def budget(max_bytes: int | None, precision: str = "fp32") -> Placement:
    return Placement(CPU, Precision(precision), max_bytes)


def _pair(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    vis = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + rng.normal(0, 0.05, xx.shape)
    ir = (
        0.3
        + 0.5 * ((yy - height / 2) ** 2 + (xx - width / 3) ** 2 < 400)
        + rng.normal(0, 0.05, xx.shape)
    )
    return np.clip(vis, 0, 1).astype(np.float32), np.clip(ir, 0, 1).astype(np.float32)


def test_no_budget_and_a_roomy_budget_are_the_untiled_fp32_path_bit_for_bit(random_model):
    vis, ir = _pair(67, 93)
    reference = fuse_arrays(random_model, vis, ir, WHOLE)
    roomy = budget(8 * 2**30)
    assert tiles_for(67, 93, roomy) is None
    assert tiles_for(67, 93, budget(None)) is None  # a share of the free memory
    assert np.array_equal(fuse_arrays(random_model, vis, ir, roomy), reference)


def test_a_tight_budget_tiles_within_one_grey_level(random_model):
    vis, ir = _pair(200, 296)
    tight = budget(estimate_bytes(200, 296, 64))  # room for 64-pixel tiles, not the whole pair
    assert tiles_for(200, 296, tight) is not None
    tiled = to_uint8(fuse_arrays(random_model, vis, ir, tight)).astype(int)
    whole = to_uint8(fuse_arrays(random_model, vis, ir, WHOLE)).astype(int)
    assert np.abs(tiled - whole).max() <= 1


def test_an_output_contrast_sets_the_whole_images_statistics_even_in_tiles(
    random_model, monkeypatch
):
    from models.contrast import OutputContrast

    vis, ir = _pair(200, 296)
    plain = fuse_arrays(random_model, vis, ir, WHOLE)
    monkeypatch.setattr(random_model, "output_contrast", OutputContrast(0.42, 0.05))
    whole = fuse_arrays(random_model, vis, ir, WHOLE)  # a spread that clips nothing here
    assert whole.min() > 0 and whole.max() < 1
    assert whole.mean() == pytest.approx(0.42, abs=1e-5)
    assert whole.std() == pytest.approx(0.05, abs=1e-5)
    assert np.corrcoef(whole.ravel(), plain.ravel())[0, 1] > 0.9999  # an affine map of it
    tight = budget(estimate_bytes(200, 296, 64))  # tiles, normalised once on the whole image
    tiled = to_uint8(fuse_arrays(random_model, vis, ir, tight)).astype(int)
    assert np.abs(tiled - to_uint8(whole).astype(int)).max() <= 1


def test_a_budget_too_small_even_for_tiles_says_how_much_is_needed(random_model):
    vis, ir = _pair(64, 64)
    with pytest.raises(TileBudgetError, match="needs at least .* MB"):
        fuse_arrays(random_model, vis, ir, budget(10**6))


def test_bf16_is_within_two_grey_levels_of_fp32(random_model, tno_pair):
    ir, vis = (read_image(p) for p in tno_pair)
    fp32 = to_uint8(fuse_arrays(random_model, vis, ir, WHOLE)).astype(int)
    bf16 = to_uint8(fuse_arrays(random_model, vis, ir, budget(None, "bf16"))).astype(int)
    assert np.abs(fp32 - bf16).max() <= 2


def _fuse_cli(model, tmp_path, *extra):
    vis, ir = _pair(48, 64)
    write_image(tmp_path / "vis.png", vis)
    write_image(tmp_path / "ir.png", ir)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "fuse", "--model", str(model),
         "--ir", str(tmp_path / "ir.png"), "--vis", str(tmp_path / "vis.png"),
         "-o", str(tmp_path / "out.png"), "--device", "cpu", *extra],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_prints_the_precision_and_refuses_a_hopeless_budget(model_checkpoint, tmp_path):
    ok = _fuse_cli(model_checkpoint, tmp_path, "--precision", "fp32")
    assert ok.returncode == 0, ok.stderr
    assert "fused on cpu, fp32, memory budget free memory (--precision fp32)" in ok.stdout
    assert read_image(tmp_path / "out.png").shape == (48, 64)  # whole, though teardown skipped
    tiny = _fuse_cli(model_checkpoint, tmp_path / "tiny", "--max-memory", "1MB")
    assert tiny.returncode == 1 and "needs at least" in tiny.stderr
    assert "Traceback" not in tiny.stderr
    bad = _fuse_cli(model_checkpoint, tmp_path / "bad", "--precision", "fp16")
    assert bad.returncode == 2
    assert "Invalid value for '--precision'" in bad.stderr
    assert "'fp16' is not one of 'auto', 'fp32', 'bf16'" in bad.stderr


def test_the_served_model_fuses_a_large_pair_in_tiles(random_model, monkeypatch):
    """The MLflow pyfunc model fuses as `coconet fuse` does: a pair larger than its memory
    budget (half the free memory) is tiled, not run whole."""
    vis, ir = _pair(200, 296)
    tight = estimate_bytes(200, 296, 64)
    monkeypatch.setattr(Placement, "memory_budget", lambda self: tight)
    calls = []
    real = tiling.fuse_tiled
    monkeypatch.setattr(fusion, "fuse_tiled", lambda *a, **k: calls.append(a) or real(*a, **k))
    served = FusionModel(random_model, budget(None))
    fused = np.asarray(served.predict({"vis": vis, "ir": ir})["fused"], dtype=np.float32)
    assert calls and calls[0][3] < 296  # the tile side
    whole = to_uint8(fuse_arrays(random_model, vis, ir, WHOLE)).astype(int)
    assert np.abs(to_uint8(fused).astype(int) - whole).max() <= 1
