"""Mask methods (classical saliency, SAM prompting with a tiny random SAM) and the masks stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from segment_anything import SamPredictor

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.segmentation.saliency import SamPromptSegmenter, ir_saliency, surround_contrast
from pipeline.stages import masks
from pipeline.stages.masks import MasksError, mask_scores
from tests.helpers.sam import infrared_scene, tiny_sam


@pytest.fixture(scope="module")
def tiny_predictor():
    return SamPredictor(tiny_sam().eval())


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
    ir, hot = infrared_scene()
    assert surround_contrast(ir, hot) > 0.4
    assert surround_contrast(ir, np.zeros_like(hot)) == 0.0


def _raw_layout(root, with_test_pair=True):
    """A tiny data/raw: two train pairs (one with a manual mask) and a test pair."""
    rows = []
    for n, pair in enumerate(["p1", "p2", "t1"]):
        ir, hot = infrared_scene(seed=n)
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
    assert np.array_equal(p1 > 0, infrared_scene(seed=0)[1])  # the manual mask, as it is
    ir0 = np.asarray(Image.open(tmp_path / "data/raw/tiny/ir/p1.png"))
    expected = mask_scores(ir_saliency(ir0), infrared_scene(seed=0)[1])
    quality = json.loads((tmp_path / "reports/masks.json").read_text())
    assert set(quality) == {"mask_iou", "mask_precision", "mask_recall"}  # metrics only
    assert quality["mask_iou"] == pytest.approx(expected["iou"], abs=1e-6)
    counts = json.loads((tmp_path / "reports/masks_summary.json").read_text())
    assert counts["evaluated"] == 1 and counts["automatic"] == 1 and counts["manual"] == 1
    assert summary == {**counts, **quality}
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
