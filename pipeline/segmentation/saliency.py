"""Salient-target masks from an infrared image: SAM prompted at hot spots, or classical saliency.

Warm targets (people, vehicles) stand out as locally hot regions of an infrared image.

* :class:`SamPromptSegmenter` finds the hottest regions (smoothed infrared above a high
  percentile), prompts segment-anything's ``SamPredictor`` with a positive point at each
  region's peak, keeps per prompt the best-scored proposal that is not too large and is
  clearly hotter than its surround, and merges the kept masks into one.
* :func:`ir_saliency` is the classical fallback (no checkpoint needed): a centre-surround local
  contrast map, ``max(G_sigma * I - G_surround * I, 0)`` -- the hot half of a difference of
  Gaussians; with no surround blur it is the frequency-tuned saliency of Achanta et al.
  (CVPR 2009) restricted to warm pixels -- thresholded with hysteresis at mean + k*std
  (low mean + k_low*std), then opened, hole-filled and stripped of small components.

The ``SamPredictor`` comes from :mod:`pipeline.segmentation.sam_model`; nothing here needs torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold

from pipeline.core.params import MasksParams


@dataclass(frozen=True)
class HotRegion:
    """A connected hot region: the peak (x, y) used as prompt, its box and size."""

    point: tuple[int, int]
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive)
    area: int
    heat: float  # sum of the smoothed excess over the threshold: ranks the regions


def _as_float(ir: np.ndarray) -> np.ndarray:
    return ir.astype(np.float32) / 255.0 if ir.dtype == np.uint8 else ir.astype(np.float32)


def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (reflecting borders)."""
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop 8-connected components smaller than ``min_area`` pixels."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def clean_mask(mask: np.ndarray, min_region_frac: float) -> np.ndarray:
    """3x3 opening, hole filling, and removal of components below ``min_region_frac``."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    opened = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)
    filled = ndi.binary_fill_holes(opened)
    return remove_small(filled, max(1, int(np.ceil(min_region_frac * mask.size))))


def hot_regions(
    ir: np.ndarray, percentile: float, min_region_frac: float, max_regions: int, sigma: float = 1.5
) -> list[HotRegion]:
    """The hottest connected regions of the smoothed infrared image, hottest first."""
    heat = smooth(_as_float(ir), sigma)
    threshold = np.percentile(heat, percentile)
    hot = (heat >= threshold) & (heat > np.median(heat))  # a flat image has no hot spot
    labels, n = ndi.label(hot, structure=np.ones((3, 3)))
    if n == 0:
        return []
    ids = np.arange(1, n + 1)
    areas = ndi.sum_labels(np.ones_like(heat), labels, ids)
    excess = ndi.sum_labels(heat - threshold, labels, ids)
    peaks = ndi.maximum_position(heat, labels, ids)
    boxes = ndi.find_objects(labels)
    min_area = max(1, int(np.ceil(min_region_frac * heat.size)))
    regions = [
        HotRegion(
            point=(int(peak[1]), int(peak[0])),
            box=(sl[1].start, sl[0].start, sl[1].stop - 1, sl[0].stop - 1),
            area=int(area),
            heat=float(ex),
        )
        for area, ex, peak, sl in zip(areas, excess, peaks, boxes, strict=True)
        if area >= min_area
    ]
    regions.sort(key=lambda r: (-r.heat, r.point))
    return regions[:max_regions]


def surround_contrast(ir: np.ndarray, mask: np.ndarray) -> float:
    """Mean infrared inside ``mask`` minus the mean in a ring around it (0..1 scale)."""
    mask = mask.astype(bool)
    area = int(mask.sum())
    if area == 0 or area == mask.size:
        return 0.0
    width = max(3, int(round(0.5 * np.sqrt(area))))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    if not ring.any():
        return 0.0
    ir = _as_float(ir)
    return float(ir[mask].mean() - ir[ring].mean())


def ir_saliency(
    ir: np.ndarray,
    sigma: float = 1.5,
    surround: float = 0.3,
    k: float = 3.5,
    k_low: float = 2.0,
    min_region_frac: float = 0.0005,
) -> np.ndarray:
    """Classical infrared saliency mask (see the module docstring); boolean HxW."""
    ir = _as_float(ir)
    centre = smooth(ir, sigma)
    background = smooth(ir, surround * min(ir.shape)) if surround > 0 else ir.mean()
    saliency = np.maximum(centre - background, 0.0)
    mean, std = float(saliency.mean()), float(saliency.std())
    if std == 0.0:
        return np.zeros(ir.shape, bool)
    mask = apply_hysteresis_threshold(saliency, mean + k_low * std, mean + k * std)
    return clean_mask(mask, min_region_frac)


@dataclass
class SamResult:
    """What the SAM segmenter did for one image (for tests and the report)."""

    mask: np.ndarray
    prompts: list[HotRegion] = field(default_factory=list)
    kept: list[dict] = field(
        default_factory=list
    )  # per kept proposal: prompt, score, area, contrast


class SamPromptSegmenter:
    """Prompt a ``SamPredictor`` at the hot regions of an infrared image and merge the masks."""

    def __init__(self, predictor, params: MasksParams):
        self.predictor = predictor
        self.params = params

    def segment(self, ir: np.ndarray) -> SamResult:
        """Full result: merged boolean mask, prompts used and proposals kept."""
        p = self.params
        ir8 = ir if ir.dtype == np.uint8 else np.clip(np.rint(ir * 255), 0, 255).astype(np.uint8)
        prompts = hot_regions(ir8, p.hot_percentile, p.min_region_frac, p.max_prompts)
        merged = np.zeros(ir8.shape, bool)
        result = SamResult(merged, prompts)
        if not prompts:
            return result
        self.predictor.set_image(np.repeat(ir8[..., None], 3, axis=2))  # RGB, HWC, uint8
        for region in prompts:
            masks, scores, _ = self.predictor.predict(
                point_coords=np.array([region.point], dtype=np.float32),
                point_labels=np.array([1]),
                multimask_output=True,
            )
            for i in np.argsort(-scores, kind="stable"):
                candidate = masks[i].astype(bool)
                area = float(candidate.mean())
                if area == 0.0 or area > p.max_area_frac:
                    continue
                contrast = surround_contrast(ir8, candidate)
                if contrast >= p.min_contrast:
                    merged |= candidate
                    result.kept.append({"prompt": region.point, "score": float(scores[i]),
                                        "area_frac": area, "contrast": contrast})  # fmt: skip
                    break
        result.mask = ndi.binary_fill_holes(merged)
        return result

    def __call__(self, ir: np.ndarray) -> np.ndarray:
        return self.segment(ir).mask
