"""Where the network computes in fp32 under bf16 autocast: the attention energies
(``models.attention``), the full-resolution decoder tail at inference (``models.coconet``), and,
for measuring, any submodule by name (:func:`keep_fp32`, ``benchmarks/bench_bf16_fidelity.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn


def without_autocast(device_type: str) -> AbstractContextManager:
    """Turn autocast off where it is on (what runs inside computes in its inputs' dtype)."""
    available = torch.amp.autocast_mode.is_autocast_available(device_type)
    if available and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def keep_fp32(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """Run the submodules ``names`` (e.g. ``"out"``, ``"dec1"``) of ``model`` in fp32 even under
    autocast: their floating inputs are cast to fp32 and autocast is off inside them. Weights and
    the state dict are unchanged; returns ``model``."""
    modules = dict(model.named_modules())
    unknown = sorted(set(names) - set(modules))
    if unknown:
        raise ValueError(f"no submodule(s) {unknown} in {type(model).__name__}")
    for name in names:
        module = modules[name]
        forward = module.forward

        @functools.wraps(forward)
        def fp32_forward(*args: Any, _forward=forward, **kwargs: Any) -> Any:
            device = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
            with torch.autocast(device, enabled=False):
                return _forward(*map(_to_fp32, args), **{k: _to_fp32(v) for k, v in kwargs.items()})

        module.forward = fp32_forward
    return model
