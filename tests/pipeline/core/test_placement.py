"""Placement (pipeline.core.placement): device, precision (fp32/bf16, autocast, accuracy) and
memory budget, resolved once from one vocabulary."""

from __future__ import annotations

import contextlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.tiling import fuse_tiled
from pipeline.core import placement as placement_mod
from pipeline.core.placement import (
    Device,
    Placement,
    PlacementError,
    Precision,
    cpu_flags,
    parse_memory,
    place,
    resolve_device,
    resolve_precision,
)
from tests.helpers.models import CPU, attention_model, grey_levels_apart


def autocast_context(precision: str, device: str) -> contextlib.AbstractContextManager:
    return Placement(torch.device(device), Precision(precision)).autocast()


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
        monkeypatch.setattr(placement_mod, "cpu_has_native_bf16", lambda: cpu)
        monkeypatch.setattr(placement_mod, "cuda_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: cuda)
        monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())

    return set_native


@pytest.mark.parametrize(
    ("text", "native_bf16"), [(CPUINFO_BF16, True), (CPUINFO_AMX, True), (CPUINFO_PLAIN, False)]
)
def test_cpuinfo_flags(text, native_bf16):
    assert bool(cpu_flags(text) & placement_mod.NATIVE_BF16_CPU_FLAGS) is native_bf16
    assert cpu_flags("") == frozenset()


def test_cpu_probe_reads_proc_cpuinfo(tmp_path, monkeypatch):
    for text, expected in ((CPUINFO_AMX, True), (CPUINFO_PLAIN, False)):
        (tmp_path / "cpuinfo").write_text(text)
        monkeypatch.setattr(placement_mod, "CPUINFO", tmp_path / "cpuinfo")
        placement_mod.cpu_has_native_bf16.cache_clear()
        assert placement_mod.cpu_has_native_bf16() is expected
    monkeypatch.setattr(placement_mod, "CPUINFO", tmp_path / "absent")
    placement_mod.cpu_has_native_bf16.cache_clear()
    assert placement_mod.cpu_has_native_bf16() is False
    placement_mod.cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_auto_picks_bf16_only_where_native(native, device):
    native(cpu=False, cuda=False)
    assert resolve_precision("auto", torch.device(device)) == "fp32"
    native(cpu=True, cuda=True)
    assert resolve_precision("auto", torch.device(device)) == "bf16"
    assert resolve_precision("fp32", torch.device(device)) == "fp32"
    assert resolve_precision("bf16", torch.device(device)) == "bf16"


def test_auto_on_other_devices_is_fp32():
    assert resolve_precision("auto", torch.device("meta")) == "fp32"


def test_unknown_words_are_errors_naming_the_vocabulary():
    with pytest.raises(PlacementError, match="unknown precision 'fp16' .use auto, fp32, bf16"):
        resolve_precision("fp16", CPU)
    with pytest.raises(PlacementError, match="unknown device 'tpu' .use auto, cpu, cuda"):
        resolve_device("tpu")


def test_the_vocabulary_is_one_for_params_and_options():
    from pipeline.cli.app import DeviceOption, PrecisionOption
    from pipeline.core.params import EvaluateParams, MasksParams, TrainParams

    assert [d.value for d in Device] == ["auto", "cpu", "cuda"]
    assert [p.value for p in Precision] == ["auto", "fp32", "bf16"]
    for section in (TrainParams, EvaluateParams, MasksParams):
        assert section.model_fields["device"].annotation is Device
    for section in (TrainParams, EvaluateParams):
        assert section.model_fields["precision"].annotation is Precision
    assert Device in DeviceOption.__args__[0].__args__
    assert PrecisionOption.__args__[0] is Precision


def test_auto_device_without_cuda_is_the_cpu_and_cuda_is_refused(monkeypatch):
    monkeypatch.setattr(placement_mod, "cuda_available", lambda: False)
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    with pytest.raises(PlacementError, match="no CUDA device"):
        resolve_device("cuda")


def test_auto_device_picks_the_local_ranks_gpu(monkeypatch):
    monkeypatch.setattr(placement_mod, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=3) == torch.device("cuda", 1)
    assert resolve_device("cpu", local_rank=3) == CPU


@pytest.mark.parametrize(
    ("text", "size"),
    [("3GB", 3 * 10**9), ("2.5GiB", int(2.5 * 2**30)), ("800 mb", 800 * 10**6), ("4096", 4096)],
)
def test_memory_sizes(text, size):
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "-1GB", "0", "inf", "nan", "1e999", "1e19"])
def test_bad_memory_sizes_are_one_line_errors(text):
    with pytest.raises(PlacementError, match="memory size"):
        parse_memory(text)


def test_place_resolves_once_and_budgets(monkeypatch):
    monkeypatch.setattr(placement_mod, "cuda_available", lambda: False)
    monkeypatch.setattr(placement_mod, "cpu_has_native_bf16", lambda: True)
    placed = place("auto", "auto", "2GB")
    assert placed == Placement(CPU, Precision.bf16, 2 * 10**9)
    assert placed.memory_budget() == 2 * 10**9
    assert placed.dtype == torch.bfloat16
    assert placed.describe() == "cpu, bf16, memory budget 1.9 GiB"
    free = place("cpu", "fp32")
    assert free.max_bytes is None and free.memory_budget() > 0


def test_explicit_bf16_without_native_support(native, model):
    """CPU: runs, emulated by autocast, with a warning. CUDA (or other): a clear error."""
    native(cpu=False, cuda=False)
    with pytest.warns(RuntimeWarning, match="emulates"):
        chosen = resolve_precision("bf16", CPU)
    assert chosen == "bf16"
    vis, ir = torch.rand(2, 1, 1, 24, 40) * 2 - 1
    with autocast_context(chosen, "cpu"), torch.inference_mode():
        fused = model(vis, ir)
    assert fused.dtype == torch.float32  # the decoder tail runs in fp32 at inference
    assert torch.isfinite(fused).all()
    with pytest.raises(PlacementError, match="no native bf16"):
        resolve_precision("bf16", torch.device("cuda"))


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
    assert bf16.dtype == torch.float32  # the decoder tail runs in fp32 at inference
    assert all(energy.dtype == torch.float32 for energy in energies)
    assert grey_levels_apart(bf16, fp32) <= 2


def test_tiling_under_bf16(model, tno_small):
    """Tiled bf16 against untiled bf16 (energies summed in fp32), and against fp32."""
    vis, ir = tno_small
    with torch.inference_mode():
        fp32 = model(vis, ir)
        with autocast_context("bf16", "cpu"):
            bf16 = model(vis, ir)
            tiled = fuse_tiled(model, vis, ir, 64, CPU, halo=48)
    assert tiled.dtype == torch.float32 and tiled.shape == fp32.shape
    assert grey_levels_apart(tiled, bf16) <= 1
    assert grey_levels_apart(tiled, fp32) <= 2
