"""Precision and memory budget of fusion: bf16 within 2 grey levels of fp32, exact tiling when a
pair exceeds the budget, a clear error when even tiles cannot fit."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from models.tiling import TileBudgetError
from pipeline.core.imageio import read_image, to_uint8, write_image
from pipeline.fusion import (
    FusionSettings,
    FusionSettingsError,
    fuse_arrays,
    fusion_settings,
    parse_memory,
    tiles_for,
)


def test_parse_memory_units():
    assert parse_memory("3GB") == 3 * 10**9
    assert parse_memory("1.5 GiB") == int(1.5 * 2**30)
    assert parse_memory("800mb") == 800 * 10**6
    assert parse_memory("4096") == 4096
    for bad in ("lots", "-1GB", "3XB"):
        with pytest.raises(FusionSettingsError, match="memory size"):
            parse_memory(bad)


def test_settings_resolve_precision_and_a_default_budget():
    settings = fusion_settings("fp32", None, torch.device("cpu"))
    assert settings.precision == "fp32" and settings.max_bytes > 2**20
    assert fusion_settings("bf16", "2GB", torch.device("cpu")) == FusionSettings("bf16", 2 * 10**9)


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
    reference = fuse_arrays(random_model, vis, ir)
    roomy = FusionSettings("fp32", 8 * 2**30)
    assert tiles_for(67, 93, roomy) is None
    assert np.array_equal(fuse_arrays(random_model, vis, ir, roomy), reference)


def test_a_tight_budget_tiles_within_one_grey_level(random_model):
    from models.tiling import estimate_bytes

    vis, ir = _pair(200, 296)
    budget = estimate_bytes(200, 296, 64)  # room for 64-pixel tiles, not for the whole pair
    settings = FusionSettings("fp32", budget)
    assert tiles_for(200, 296, settings) is not None
    tiled = to_uint8(fuse_arrays(random_model, vis, ir, settings)).astype(int)
    whole = to_uint8(fuse_arrays(random_model, vis, ir)).astype(int)
    assert np.abs(tiled - whole).max() <= 1


def test_a_budget_too_small_even_for_tiles_says_how_much_is_needed(random_model):
    vis, ir = _pair(64, 64)
    with pytest.raises(TileBudgetError, match="needs at least .* MB"):
        fuse_arrays(random_model, vis, ir, FusionSettings("fp32", 10**6))


def test_bf16_is_within_two_grey_levels_of_fp32(random_model, tno_pair):
    ir, vis = (read_image(p) for p in tno_pair)
    fp32 = to_uint8(fuse_arrays(random_model, vis, ir, FusionSettings("fp32"))).astype(int)
    bf16 = to_uint8(fuse_arrays(random_model, vis, ir, FusionSettings("bf16"))).astype(int)
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
    assert "fused on cpu in fp32 (--precision fp32)" in ok.stdout
    tiny = _fuse_cli(model_checkpoint, tmp_path / "tiny", "--max-memory", "1MB")
    assert tiny.returncode == 1 and "needs at least" in tiny.stderr
    assert "Traceback" not in tiny.stderr
    bad = _fuse_cli(model_checkpoint, tmp_path / "bad", "--precision", "fp16")
    assert bad.returncode == 2 and "--precision must be one of" in bad.stderr


def test_the_served_model_fuses_a_large_pair_in_tiles(random_model, monkeypatch):
    """The MLflow pyfunc model fuses as `coconet fuse` does: a pair larger than its memory
    budget (half the free memory) is tiled, not run whole."""
    from models import tiling
    from models.tiling import estimate_bytes
    from pipeline import fusion
    from pipeline.tracking.pyfunc_model import FusionModel

    vis, ir = _pair(200, 296)
    budget = estimate_bytes(200, 296, 64)
    monkeypatch.setattr(fusion, "default_memory_budget", lambda device: budget)
    calls = []
    real = tiling.fuse_tiled
    monkeypatch.setattr(fusion, "fuse_tiled", lambda *a, **k: calls.append(k) or real(*a, **k))
    served = FusionModel(random_model, precision="fp32")
    fused = np.asarray(served.predict({"vis": vis, "ir": ir})["fused"], dtype=np.float32)
    assert calls and calls[0]["tile"] < 296
    whole = to_uint8(fuse_arrays(random_model, vis, ir)).astype(int)
    assert np.abs(to_uint8(fused).astype(int) - whole).max() <= 1
