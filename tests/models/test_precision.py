"""models.precision.keep_fp32: named submodules run in fp32 under bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.precision import keep_fp32


def _small() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)).eval()


def test_kept_modules_compute_in_fp32_under_bf16_autocast():
    x = torch.rand(1, 1, 16, 16)
    model = _small()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).dtype == torch.bfloat16
    reference = model(x)
    keep_fp32(model, ["0", "2"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32
    assert torch.equal(out, reference)  # every conv in fp32: the fp32 result exactly
    assert set(model.state_dict()) == set(_small().state_dict())


def test_unknown_module_names_are_refused():
    with pytest.raises(ValueError, match=r"no submodule\(s\) \['dec9'\]"):
        keep_fp32(_small(), ["dec9"])
