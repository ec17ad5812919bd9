"""The training objective (models.objective): named terms, their total, per phase."""

from __future__ import annotations

import pytest
import torch

from models.objective import TOTAL, FusionObjective
from models.vgg import VGG19Features


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return VGG19Features(weights="random")


def batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    fused, vis, ir = torch.rand(3, 4, 1, 16, 16, generator=generator)
    mask = torch.zeros(4, 1, 16, 16)
    mask[::2, :, 4:10, 4:10] = 1
    return fused.requires_grad_(), vis, ir, mask


def test_terms_are_named_in_order_and_the_total_is_their_combination(vgg):
    objective = FusionObjective(vgg, contrast_weight=0.5)
    terms = objective(*batch(), phase=2)
    assert tuple(terms) == FusionObjective.names and FusionObjective.names[0] == TOTAL
    assert all(t.dim() == 0 and t.dtype == torch.float32 for t in terms.values())
    assert torch.allclose(terms["adaptive"], terms["ssim"] + terms["intensity"])
    assert torch.allclose(terms[TOTAL], terms["adaptive"] + 0.5 * terms["contrastive"])
    assert terms["contrastive"] > 0
    terms[TOTAL].backward()  # one graph through every term


def test_phase_one_and_a_zero_weight_have_no_contrastive_term(vgg):
    phase1 = FusionObjective(vgg)(*batch(), phase=1)
    assert phase1["contrastive"] == 0 and torch.equal(phase1[TOTAL], phase1["adaptive"])
    unweighted = FusionObjective(vgg, contrast_weight=0.0)(*batch(), phase=2)
    assert unweighted["contrastive"] == 0


def test_the_detail_term_is_weighted_into_the_total_in_both_phases(vgg):
    for phase in (1, 2):
        plain = FusionObjective(vgg)(*batch(), phase=phase)
        assert plain["detail"] == 0  # the paper's loss: no detail term
        terms = FusionObjective(vgg, detail_weight=3.0, detail_gain=1.5)(*batch(), phase=phase)
        assert terms["detail"] > 0
        expected = terms["adaptive"] + terms["contrastive"] + 3.0 * terms["detail"]
        assert torch.allclose(terms[TOTAL], expected)
        assert torch.allclose(terms["adaptive"], plain["adaptive"])


def test_the_contrastive_features_run_under_the_given_autocast(vgg, monkeypatch):
    seen = []
    taps = vgg.contrast_taps
    monkeypatch.setattr(
        vgg, "contrast_taps", lambda x: seen.append(torch.is_autocast_enabled("cpu")) or taps(x)
    )

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    terms = FusionObjective(vgg)(*batch(), phase=2, autocast=bf16)
    assert terms["contrastive"].dtype == torch.float32
    assert seen == [True, True]  # anchors, then positives and negatives
    FusionObjective(vgg)(*batch(), phase=2)
    assert seen[2:] == [False, False]
