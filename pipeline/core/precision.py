"""Inference precision: fp32, or bf16 autocast where the hardware computes bf16 natively.

``resolve_precision("auto", device)`` picks bf16 on a CUDA device with native bf16 (compute
capability 8.0+, ``torch.cuda.is_bf16_supported(including_emulation=False)``) and on a CPU with
native bf16 instructions, else fp32. ``autocast_context`` turns the answer into a context manager.

CPU detection reads the ``avx512_bf16`` and ``amx_bf16`` flags of ``/proc/cpuinfo`` (x86 Linux).
``torch.backends.cpu.get_cpu_capability()`` is not enough: it names the vector ISA of ATen's own
kernels ("AVX2", "AVX512", ...) and says nothing about the bf16 dot-product instructions
(AVX512_BF16, AMX) that oneDNN's bf16 convolutions need to beat fp32; an "AVX512" CPU without
them emulates bf16, usually slower than fp32. Without ``/proc/cpuinfo`` (macOS, Windows) auto
keeps fp32.

Asking for bf16 explicitly where it is not native: on the CPU it still runs (autocast emulates
it; a ``RuntimeWarning`` says it is likely slower); on a CUDA device without bf16 it is a
``PrecisionError``, as on any other device type.

Under bf16 the channel attention's energies and softmax stay in fp32 (``models.attention``).
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path

import torch

from pipeline.core.errors import CoconetError

PRECISIONS = ("auto", "fp32", "bf16")
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


class PrecisionError(CoconetError, ValueError):
    """A precision that is unknown, or that the device cannot run."""


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The ``flags`` of the first processor in a ``/proc/cpuinfo`` text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has AVX512_BF16 or AMX-BF16 (Linux ``/proc/cpuinfo``; else False)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    return bool(cpu_flags(text) & NATIVE_BF16_CPU_FLAGS)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA device computes bf16 natively (compute capability 8.0 or newer)."""
    if not torch.cuda.is_available():
        return False
    with torch.cuda.device(device):
        return torch.cuda.is_bf16_supported(including_emulation=False)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively."""
    if device.type == "cuda":
        return cuda_has_native_bf16(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def resolve_precision(requested: str, device: torch.device | str) -> str:
    """``"auto"``, ``"fp32"`` or ``"bf16"`` -> ``"fp32"`` or ``"bf16"`` for ``device``."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise PrecisionError(f"unknown precision {requested!r} (use {', '.join(PRECISIONS)})")
    if requested == "fp32":
        return "fp32"
    native = native_bf16(device)
    if requested == "auto":
        return "bf16" if native else "fp32"
    if native:
        return "bf16"
    if device.type == "cpu":
        warnings.warn(
            "bf16 asked for on a CPU without AVX512_BF16 or AMX: autocast emulates it, "
            "which is usually slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
        return "bf16"
    raise PrecisionError(
        f"bf16 asked for, but {device} has no native bf16 support (CUDA needs compute "
        "capability 8.0 or newer); use fp32 or auto"
    )


def autocast_context(precision: str, device: torch.device | str) -> AbstractContextManager:
    """``torch.autocast(device.type, dtype=torch.bfloat16)`` for bf16, a no-op for fp32."""
    device = torch.device(device)
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    raise PrecisionError(
        f"precision must be 'fp32' or 'bf16' here, got {precision!r} (resolve 'auto' first)"
    )
