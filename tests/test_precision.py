"""Inference precision (pipeline.core.precision): choosing fp32/bf16, autocast, accuracy."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tiling import attention_model, grey_levels_apart

from models.tiling import fuse_tiled
from pipeline.core import precision
from pipeline.core.precision import (
    PrecisionError,
    autocast_context,
    cpu_flags,
    resolve_precision,
)

CPUINFO_BF16 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
CPUINFO_AMX = "processor\t: 0\nflags\t\t: fpu avx512f amx_tile amx_bf16 amx_int8\n"
CPUINFO_PLAIN = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"


@pytest.fixture(scope="module")
def model():
    return attention_model(seed=7)


@pytest.fixture
def native(monkeypatch):
    """Set what the CPU and CUDA bf16 probes answer."""

    def set_native(cpu: bool, cuda: bool = False) -> None:
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: cpu)
        monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda device: cuda)

    return set_native


@pytest.mark.parametrize(
    ("text", "native_bf16"), [(CPUINFO_BF16, True), (CPUINFO_AMX, True), (CPUINFO_PLAIN, False)]
)
def test_cpuinfo_flags(text, native_bf16):
    assert bool(cpu_flags(text) & precision.NATIVE_BF16_CPU_FLAGS) is native_bf16
    assert cpu_flags("") == frozenset()


def test_cpu_probe_reads_proc_cpuinfo(tmp_path, monkeypatch):
    for text, expected in ((CPUINFO_AMX, True), (CPUINFO_PLAIN, False)):
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", tmp_path / "cpuinfo")
        precision.cpu_has_native_bf16.cache_clear()
        assert precision.cpu_has_native_bf16() is expected
    monkeypatch.setattr(precision, "CPUINFO", tmp_path / "absent")
    precision.cpu_has_native_bf16.cache_clear()
    assert precision.cpu_has_native_bf16() is False
    precision.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_picks_bf16_only_where_native(native, device):
    native(cpu=False, cuda=False)
    assert resolve_precision("auto", device) == "fp32"
    native(cpu=True, cuda=True)
    assert resolve_precision("auto", device) == "bf16"
    assert resolve_precision("fp32", device) == "fp32"
    assert resolve_precision("bf16", torch.device(device)) == "bf16"


def test_auto_on_other_devices_is_fp32():
    assert resolve_precision("auto", "meta") == "fp32"


def test_unknown_precision_is_an_error():
    with pytest.raises(PrecisionError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(PrecisionError, match="resolve 'auto' first"):
        autocast_context("auto", "cpu")


def test_explicit_bf16_without_native_support(native, model):
    """CPU: runs, emulated by autocast, with a warning. CUDA (or other): a clear error."""
    native(cpu=False, cuda=False)
    with pytest.warns(RuntimeWarning, match="emulates"):
        chosen = resolve_precision("bf16", "cpu")
    assert chosen == "bf16"
    vis, ir = torch.rand(2, 1, 1, 24, 40) * 2 - 1
    with autocast_context(chosen, "cpu"), torch.inference_mode():
        fused = model(vis, ir)
    assert fused.dtype == torch.bfloat16 and torch.isfinite(fused).all()
    with pytest.raises(PrecisionError, match="no native bf16"):
        resolve_precision("bf16", "cuda")


def test_autocast_context_kinds():
    assert isinstance(autocast_context("fp32", "cpu"), contextlib.nullcontext)
    context = autocast_context("bf16", torch.device("cpu"))
    assert isinstance(context, torch.autocast)
    assert context.fast_dtype == torch.bfloat16 and context.device == "cpu"


def test_fp32_is_bit_for_bit_the_plain_call(model):
    vis, ir = torch.rand(2, 1, 1, 45, 67) * 2 - 1
    with torch.inference_mode():
        plain = model(vis, ir)
        with autocast_context("fp32", "cpu"):
            wrapped = model(vis, ir)
    assert wrapped.dtype == torch.float32
    assert torch.equal(plain, wrapped)


def _tno(path: Path, size: tuple[int, int]) -> torch.Tensor:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None, path
    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy(image)[None, None] * 2 - 1


@pytest.fixture(scope="module")
def tno_small(tno_pair):
    """TNO pair 36 (359x247) at half size, 179x123 (odd), as (visible, infrared) on [-1, 1]."""
    ir_path, vis_path = tno_pair
    return _tno(vis_path, (179, 123)), _tno(ir_path, (179, 123))


def test_bf16_is_within_two_grey_levels_of_fp32(model, tno_small):
    vis, ir = tno_small
    with torch.inference_mode():
        fp32 = model(vis, ir)
        with autocast_context("bf16", "cpu"):
            bf16 = model(vis, ir)
            corner = torch.cat([vis, ir], dim=1)[..., :32, :48]
            energies = model.attention_energies(model.encode(corner))
    assert bf16.dtype == torch.bfloat16
    assert all(energy.dtype == torch.float32 for energy in energies)
    assert grey_levels_apart(bf16, fp32) <= 2


def test_tiling_under_bf16(model, tno_small):
    """Tiled bf16 against untiled bf16 (energies summed in fp32), and against fp32."""
    vis, ir = tno_small
    with torch.inference_mode():
        fp32 = model(vis, ir)
        with autocast_context("bf16", "cpu"):
            bf16 = model(vis, ir)
            tiled = fuse_tiled(model, vis, ir, tile=64, halo=48)
    assert tiled.dtype == torch.bfloat16 and tiled.shape == fp32.shape
    assert grey_levels_apart(tiled, bf16) <= 1
    assert grey_levels_apart(tiled, fp32) <= 2
