"""Mask methods (pipeline.segmentation.saliency): classical infrared saliency, and SAM prompted
at hot spots with a tiny random SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi
from segment_anything import SamPredictor

from pipeline.core.params import MasksParams
from pipeline.segmentation.saliency import (
    SamPromptSegmenter,
    hot_regions,
    ir_saliency,
    surround_contrast,
)
from pipeline.stages.masks import mask_scores
from tests.helpers.sam import SpyPredictor, infrared_scene, tiny_sam


def test_ir_saliency_segments_the_hot_target_not_the_cold_one():
    ir, hot = infrared_scene()
    mask = ir_saliency(ir, sigma=1.5, surround=0.3, k=3.5, k_low=2.0)
    assert mask.dtype == bool and mask.shape == ir.shape
    assert mask_scores(mask, hot)["iou"] > 0.8
    assert not mask[60, 30]
    assert not ir_saliency(np.full((32, 32), 128, np.uint8)).any()  # flat image: nothing salient


def test_hot_regions_rank_by_heat_and_drop_small_regions():
    ir = np.full((64, 64), 50, np.uint8)
    ir[10:20, 10:20] = 250  # big hot square
    ir[40:44, 40:44] = 250  # small hot square
    ir[60, 2] = 255  # a single hot pixel
    regions = hot_regions(ir, percentile=95, min_region_frac=0.003, max_regions=8, sigma=0.5)
    assert len(regions) == 2
    big, small = regions
    assert 10 <= big.point[0] < 20 and 10 <= big.point[1] < 20
    assert 40 <= small.point[0] < 44 and big.area > small.area and big.heat > small.heat
    assert len(hot_regions(ir, 95, 0.003, max_regions=1, sigma=0.5)) == 1


@pytest.fixture(scope="module")
def tiny_predictor():
    return SamPredictor(tiny_sam().eval())


def _expected_merge(ir, calls, params):
    """The selection rule, applied to the recorded proposals: the oracle for the segmenter."""
    merged = np.zeros(ir.shape, bool)
    for _, (proposals, scores, _) in calls:
        for i in np.argsort(-scores, kind="stable"):
            area = proposals[i].mean()
            contrast = surround_contrast(ir, proposals[i])
            if 0 < area <= params.max_area_frac and contrast >= params.min_contrast:
                merged |= proposals[i]
                break
    return ndi.binary_fill_holes(merged)


@pytest.mark.parametrize("min_contrast", [-1.0, 0.05])
def test_sam_segmenter_prompts_hot_spots_selects_and_merges(tiny_predictor, min_contrast):
    ir = np.full((96, 128), 60, np.uint8)
    ir[20:34, 20:30] = 240  # two warm targets
    ir[60:80, 90:104] = 230
    params = MasksParams(hot_percentile=90, max_prompts=4, min_region_frac=0.001, max_area_frac=0.9)
    params = params.model_copy(update={"min_contrast": min_contrast})  # -1: accept any contrast
    spy = SpyPredictor(tiny_predictor)
    result = SamPromptSegmenter(spy, params).segment(ir)

    assert len(spy.images) == 1 and spy.images[0].shape == (96, 128, 3)
    assert np.array_equal(spy.images[0][..., 1], ir)
    points = [tuple(kw["point_coords"][0].astype(int)) for kw, _ in spy.calls]
    assert points == [r.point for r in result.prompts] and len(points) == 2
    assert all(20 <= y < 34 and 20 <= x < 30 or 60 <= y < 80 and 90 <= x < 104 for x, y in points)
    assert all(kw["point_labels"].tolist() == [1] for kw, _ in spy.calls)
    assert result.mask.shape == ir.shape and result.mask.dtype == bool
    assert np.array_equal(result.mask, _expected_merge(ir, spy.calls, params))
    for kept in result.kept:
        assert kept["area_frac"] <= params.max_area_frac and kept["contrast"] >= min_contrast
    if min_contrast < 0:  # everything non-empty and small enough is accepted
        assert len(result.kept) == sum(
            any(0 < m.mean() <= 0.9 for m in proposals) for _, (proposals, _, _) in spy.calls
        )

    strict = params.model_copy(update={"max_area_frac": 1e-9})
    assert not SamPromptSegmenter(tiny_predictor, strict)(ir).any()
    flat = np.full((40, 40), 90, np.uint8)  # no hot spot: no prompt, empty mask
    assert not SamPromptSegmenter(spy, params).segment(flat).prompts


@pytest.mark.gpu
def test_tiny_sam_on_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    ir, _ = infrared_scene()
    predictor = SamPredictor(tiny_sam().to("cuda").eval())
    params = MasksParams(hot_percentile=95, min_contrast=0.0, max_area_frac=0.9)
    result = SamPromptSegmenter(predictor, params).segment(ir)
    assert result.mask.shape == ir.shape and result.prompts


def test_ir_saliency_quality_on_the_manual_tno_masks(mirror_root):
    """Measured, not assumed: the classical method's IoU against the 20 hand-drawn masks."""
    folder = mirror_root / (
        "raw.githubusercontent.com/Linfeng-Tang/STDFusionNet/"
        "4a8772c0c3fcec18e6fc0f81ff9fb7ae1ec12743"
    )
    if not (folder / "Train_ir").is_dir():
        pytest.skip(f"masked TNO pairs not in the mirror ({folder})")
    p = MasksParams()
    ious = []
    for path in sorted((folder / "Train_ir").glob("*.bmp")):
        ir = np.asarray(Image.open(path).convert("L"))
        truth = np.asarray(Image.open(folder / "Train_ir_mask" / path.name).convert("L")) > 127
        mask = ir_saliency(ir, p.saliency_sigma, p.saliency_surround, p.saliency_k,
                           p.saliency_k_low, p.min_region_frac)  # fmt: skip
        ious.append(mask_scores(mask, truth)["iou"])
    assert len(ious) == 20 and np.mean(ious) > 0.35
