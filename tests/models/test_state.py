"""Lean fusion weights: what a fusion model holds, and files with the whole VGG-19 still load."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.coconet import CoCoNet
from models.official import VGG19_CONVS
from models.state import StateDictError, coconet_from_state, fusion_state, is_contrast_only
from tests.helpers.models import attention_model, scene

DEEP_CONVS = [name for name in VGG19_CONVS if name[4] in "45"]  # conv4_1 .. conv5_4


def test_fusion_state_drops_exactly_the_contrastive_only_vgg_layers():
    full = attention_model().state_dict()
    lean = fusion_state(full)
    dropped = set(full) - set(lean)
    deep = {f"vgg.features.{VGG19_CONVS[c]}.{t}" for c in DEEP_CONVS for t in ("weight", "bias")}
    assert dropped == deep and len(dropped) == 16
    assert set(lean) == set(CoCoNet("random", fusion_only=True).state_dict())
    assert all(torch.equal(lean[k], full[k]) for k in lean)
    assert not is_contrast_only("vgg.features.16.weight")
    assert is_contrast_only("vgg.features.19.bias")
    assert not is_contrast_only("dec4.0.0.weight")


def test_lean_and_full_states_load_into_the_same_network():
    model = attention_model()
    full = model.state_dict()
    vis, ir = scene(1, 40, 56)
    with torch.inference_mode():
        expected = model(vis, ir)
        for state in (full, fusion_state(full)):
            loaded = coconet_from_state(dict(state), "random", "test")
            assert len(loaded.vgg.features) == 18  # conv1_1 .. relu3_4
            assert not any(p.is_meta for p in loaded.parameters())
            assert not any(p.requires_grad for p in loaded.vgg.parameters())
            torch.testing.assert_close(loaded(vis, ir), expected, rtol=0, atol=0)


def test_a_lean_model_has_no_contrastive_taps_and_counts_its_vgg():
    lean = CoCoNet("random", fusion_only=True)
    assert lean.frozen_parameters() == 2_324_416
    assert lean.trainable_parameters() == 6_789_764
    with pytest.raises(RuntimeError, match="fusion-only"):
        lean.vgg.contrast_taps(torch.zeros(1, 1, 32, 32))


def test_other_missing_or_extra_tensors_are_still_refused():
    lean = fusion_state(attention_model().state_dict())
    with pytest.raises(StateDictError, match="1 unexpected"):
        coconet_from_state({**lean, "extra.weight": torch.zeros(1)}, "random", "x")
    del lean["vgg.features.16.weight"]  # a layer fusion runs
    with pytest.raises(StateDictError, match="1 missing"):
        coconet_from_state(lean, "random", "x")


def test_building_the_network_imports_no_torchvision():
    code = "import sys, models.state, models.coconet; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
