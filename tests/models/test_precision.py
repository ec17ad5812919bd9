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


def test_at_inference_the_full_resolution_layers_run_in_fp32_under_bf16():
    """The precision rule: enc1, dec1, out and tanh compute in fp32 in eval mode, under bf16
    autocast too (bf16 there put single pixels 3-4 grey levels from fp32); training keeps bf16."""
    from models.coconet import CoCoNet

    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random")
    seen: dict[str, torch.dtype] = {}
    model.dec1.register_forward_pre_hook(lambda m, args: seen.update(dec1=args[0].dtype))
    model.enc1[0][0].register_forward_hook(lambda m, args, out: seen.update(enc1=out.dtype))
    vis, ir = torch.rand(1, 1, 32, 32) * 2 - 1, torch.rand(1, 1, 32, 32) * 2 - 1
    model.eval()
    with torch.inference_mode():
        fp32 = model(vis, ir)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(vis, ir)
    assert bf16.dtype == torch.float32 and seen["dec1"] == seen["enc1"] == torch.float32
    assert (bf16 - fp32).abs().max() * 127.5 < 2  # on [-1, 1]: within 2 grey levels
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(vis, ir).dtype == torch.bfloat16
    assert seen["dec1"] == seen["enc1"] == torch.bfloat16
