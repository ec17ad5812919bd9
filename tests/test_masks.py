"""Mask methods (classical saliency, SAM prompting with a tiny random SAM) and the masks stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage as ndi

from pipeline.core.params import MasksParams, Params
from pipeline.core.paths import ProjectPaths
from pipeline.data.saliency import (
    SamPromptSegmenter,
    hot_regions,
    ir_saliency,
    surround_contrast,
)
from pipeline.stages import masks
from pipeline.stages.masks import MasksError, mask_scores


def scene(h: int = 96, w: int = 128, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy infrared frame with a hot disc (the target), a cold disc and a gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    image = 0.3 + 0.1 * xx / w + rng.normal(0, 0.02, (h, w))
    hot = (yy - 40) ** 2 + (xx - 80) ** 2 <= 8**2
    image[hot] = 0.85
    image[(yy - 60) ** 2 + (xx - 30) ** 2 <= 8**2] = 0.02
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8), hot


def test_ir_saliency_segments_the_hot_target_not_the_cold_one():
    ir, hot = scene()
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


def test_mask_scores_and_surround_contrast():
    truth = np.zeros((10, 10), bool)
    truth[:5] = True
    pred = np.zeros((10, 10), bool)
    pred[:5, :5] = True
    pred[9, 9] = True
    assert mask_scores(pred, truth) == pytest.approx(
        {"iou": 25 / 51, "precision": 25 / 26, "recall": 0.5}
    )
    assert mask_scores(truth & False, truth & False)["iou"] == 1.0
    ir, hot = scene()
    assert surround_contrast(ir, hot) > 0.4
    assert surround_contrast(ir, np.zeros_like(hot)) == 0.0


def tiny_sam():
    """A randomly initialised SAM built from segment-anything's own modules (64 px input)."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(0)
    size, patch, dim = 64, 16, 32
    encoder = ImageEncoderViT(
        img_size=size, patch_size=patch, embed_dim=32, depth=1, num_heads=2, mlp_ratio=2.0,
        out_chans=dim, qkv_bias=True, use_rel_pos=False, window_size=0, global_attn_indexes=(),
    )  # fmt: skip
    prompts = PromptEncoder(
        embed_dim=dim, image_embedding_size=(size // patch, size // patch),
        input_image_size=(size, size), mask_in_chans=4,
    )  # fmt: skip
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
        transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16,
    )  # fmt: skip
    return Sam(encoder, prompts, decoder, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375])


class SpyPredictor:
    """Wraps a real ``SamPredictor`` and records every prompt and its proposals."""

    def __init__(self, predictor):
        self.predictor, self.images, self.calls = predictor, [], []

    def set_image(self, image):
        self.images.append(image)
        self.predictor.set_image(image)

    def predict(self, **kwargs):
        out = self.predictor.predict(**kwargs)
        self.calls.append((kwargs, out))
        return out


@pytest.fixture(scope="module")
def tiny_predictor():
    from segment_anything import SamPredictor

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


def _raw_layout(root, with_test_pair=True):
    """A tiny data/raw: two train pairs (one with a manual mask) and a test pair."""
    rows = []
    for n, pair in enumerate(["p1", "p2", "t1"]):
        ir, hot = scene(seed=n)
        split = "test" if pair == "t1" else "train"
        rel = {r: f"data/raw/tiny/{r}/{pair}.png" for r in ("ir", "vis", "mask")}
        for role, image in (("ir", ir), ("vis", 255 - ir), ("mask", hot.astype(np.uint8) * 255)):
            if role == "mask" and pair != "p1":
                rel["mask"] = ""
                continue
            (root / rel[role]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / rel[role])
        rows.append({"pair_id": f"tiny/{pair}", "dataset": "tiny", "pair": pair, "split": split,
                     "width": 128, "height": 96, **rel})  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "data/raw/index.csv", index=False)


def test_masks_stage_ir_saliency(tmp_path):
    _raw_layout(tmp_path)
    params = Params.model_validate({"masks": {"method": "ir_saliency", "preview_pairs": 2}})
    summary = masks.run(params, ProjectPaths(tmp_path))
    index = pd.read_csv(tmp_path / "data/masks/index.csv")
    assert index.to_dict("list") == {
        "pair_id": ["tiny/p1", "tiny/p2"],
        "mask": ["data/masks/tiny/p1.png", "data/masks/tiny/p2.png"],
        "method": ["manual", "ir_saliency"],
    }
    p1 = np.asarray(Image.open(tmp_path / "data/masks/tiny/p1.png"))
    assert set(np.unique(p1)) == {0, 255}
    assert np.array_equal(p1 > 0, scene(seed=0)[1])  # the manual mask, as it is
    ir0 = np.asarray(Image.open(tmp_path / "data/raw/tiny/ir/p1.png"))
    expected = mask_scores(ir_saliency(ir0), scene(seed=0)[1])
    report = json.loads((tmp_path / "reports/masks.json").read_text())
    assert report == summary and report["evaluated"] == 1 and report["automatic"] == 1
    assert report["iou"] == pytest.approx(expected["iou"], abs=1e-6)
    per_image = pd.read_csv(tmp_path / "reports/masks_per_image.csv")
    assert per_image["pair_id"].tolist() == ["tiny/p1"]
    assert Image.open(tmp_path / "reports/masks_preview.png").size[0] > 100
    assert not [p for p in (tmp_path / "data").iterdir() if p.name.startswith(".")]


def test_masks_stage_with_tiny_sam_records_method(tmp_path, tiny_predictor):
    _raw_layout(tmp_path)
    settings = {"method": "sam", "hot_percentile": 95, "min_contrast": 0.0, "max_area_frac": 0.9}
    params = Params.model_validate({"masks": settings})
    segmenter = SamPromptSegmenter(tiny_predictor, params.masks)
    summary = masks.run(params, ProjectPaths(tmp_path), segmenter=segmenter)
    methods = pd.read_csv(tmp_path / "data/masks/index.csv")["method"].tolist()
    assert methods == ["manual", "sam"] and summary["method"] == "sam"


def test_missing_sam_checkpoint_says_what_to_set(tmp_path):
    _raw_layout(tmp_path)
    params = Params.model_validate({"masks": {"method": "sam", "sam_model": "vit_l"}})
    with pytest.raises(MasksError, match=r"download.sam=vit_l .*masks.method=ir_saliency"):
        masks.run(params, ProjectPaths(tmp_path))
    assert not (tmp_path / "data/masks").exists()


@pytest.mark.gpu
def test_tiny_sam_on_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from segment_anything import SamPredictor

    ir, _ = scene()
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
