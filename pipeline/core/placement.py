"""Where and how work runs: the device, the precision and the memory budget, resolved once.

Every entry point (a ``coconet`` command, a stage, the served model, a flow task) turns the
user's words into a :class:`Placement` with :func:`place` and passes it down; nothing below an
entry asks torch which device it is on. The vocabulary is the same for options and params:

* ``device``: ``auto`` (CUDA when present, else the CPU), ``cpu`` or ``cuda``;
* ``precision``: ``auto`` (bf16 where the device computes it natively, else fp32), ``fp32`` or
  ``bf16``;
* ``max_memory``: a size such as ``3GB`` or ``800MiB``; a fusion needing more is tiled.
  Unset, the budget is a safe share of the memory free when a pair is fused (half the free
  RAM, 80% of a GPU's free memory).

Native bf16: a CUDA device of compute capability 8.0+ (``is_bf16_supported(including_emulation
=False)``), or a CPU whose ``/proc/cpuinfo`` flags hold ``avx512_bf16`` or ``amx_bf16`` (ATen's
``get_cpu_capability`` names only the vector ISA, not the bf16 dot-product instructions that
make oneDNN's bf16 convolutions beat fp32). Without ``/proc/cpuinfo`` (macOS, Windows) ``auto``
keeps fp32. ``bf16`` asked for on a CPU without them still runs (emulated, a ``RuntimeWarning``
says it is likely slower); on a CUDA device without bf16 it is an error.

torch is imported inside the functions that need it: the vocabulary is read by ``params.py``
and the command line, which must answer ``--help`` and argument errors without loading torch.
"""

from __future__ import annotations

import math
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from pipeline.core.errors import CoconetError

if TYPE_CHECKING:
    import torch

NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")
CPU_SAFE_FRACTION = 0.5  # of the RAM available now: the default memory budget
GPU_SAFE_FRACTION = 0.8  # of the GPU memory free now


class Device(StrEnum):
    """Where work runs."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(StrEnum):
    """The arithmetic of the network: fp32, or bf16 autocast."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


class PlacementError(CoconetError, ValueError):
    """A device, precision or memory budget that is unknown or that this machine cannot run."""


MEMORY_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
MEMORY_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_memory(text: str) -> int:
    """'3GB', '2.5GiB', '800MB' or a plain byte count -> bytes (positive and finite)."""
    value = str(text).strip().upper().replace(" ", "")
    number = value.rstrip("KMGTIB")
    unit = value[len(number) :]
    try:
        size = float(number) * MEMORY_UNITS[unit]
    except (ValueError, KeyError):
        raise PlacementError(
            f"memory size {text!r}: use a number with B, MB, GB, MiB or GiB (e.g. 3GB)"
        ) from None
    if not math.isfinite(size) or size <= 0 or size >= 2**63:
        raise PlacementError(f"memory size {text!r}: must be a positive size below 8 EiB")
    return int(size)


def cuda_available() -> bool:
    """Whether a CUDA device is usable (the one place that asks torch)."""
    import torch

    return torch.cuda.is_available()


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


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively."""
    import torch

    if device.type == "cuda":
        if not cuda_available():
            return False
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu" and cpu_has_native_bf16()


def resolve_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when present (device ``local_rank`` modulo the count), else the CPU;
    ``cuda`` without a CUDA device is an error."""
    import torch

    try:
        requested = Device(requested)
    except ValueError:
        raise PlacementError(f"unknown device {requested!r} (use {', '.join(Device)})") from None
    use_cuda = requested is Device.cuda or (requested is Device.auto and cuda_available())
    if not use_cuda:
        return torch.device("cpu")
    if not cuda_available():
        raise PlacementError("device cuda asked for, but no CUDA device is available")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """``auto``, ``fp32`` or ``bf16`` -> ``fp32`` or ``bf16`` for ``device``."""
    try:
        requested = Precision(requested)
    except ValueError:
        raise PlacementError(
            f"unknown precision {requested!r} (use {', '.join(Precision)})"
        ) from None
    if requested is Precision.fp32:
        return Precision.fp32
    native = native_bf16(device)
    if requested is Precision.auto:
        return Precision.bf16 if native else Precision.fp32
    if native:
        return Precision.bf16
    if device.type == "cpu":
        warnings.warn(
            "bf16 asked for on a CPU without AVX512_BF16 or AMX: autocast emulates it, "
            "which is usually slower than fp32",
            RuntimeWarning,
            stacklevel=2,
        )
        return Precision.bf16
    raise PlacementError(
        f"bf16 asked for, but {device} has no native bf16 support (CUDA needs compute "
        "capability 8.0 or newer); use fp32 or auto"
    )


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision, and the memory budget for fusion (``max_bytes``;
    None: a safe share of the memory free at the time, see :meth:`memory_budget`)."""

    device: torch.device
    precision: Precision = Precision.fp32
    max_bytes: int | None = None

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on the device, or nothing (fp32)."""
        import torch

        if self.precision is Precision.bf16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype under this precision."""
        import torch

        return torch.bfloat16 if self.precision is Precision.bf16 else torch.float32

    def memory_budget(self) -> int:
        """``max_bytes``, or a safe share of the memory free now on the device."""
        if self.max_bytes is not None:
            return self.max_bytes
        if self.device.type == "cuda":
            import torch

            return int(GPU_SAFE_FRACTION * torch.cuda.mem_get_info(self.device)[0])
        return int(CPU_SAFE_FRACTION * psutil.virtual_memory().available)

    def describe(self) -> str:
        """One phrase for logs: ``cpu, bf16, memory budget 3.0 GiB``."""
        budget = (
            f"{self.max_bytes / 2**30:.1f} GiB" if self.max_bytes is not None else "free memory"
        )
        return f"{self.device}, {self.precision}, memory budget {budget}"


def place(
    device: str = "auto",
    precision: str = "auto",
    max_memory: str | int | None = None,
    local_rank: int = 0,
) -> Placement:
    """Resolve the user's device, precision and memory budget once, at an entry point."""
    budget = None if max_memory in (None, "") else parse_memory(str(max_memory))
    where = resolve_device(device, local_rank)
    return Placement(where, resolve_precision(precision, where), budget)
