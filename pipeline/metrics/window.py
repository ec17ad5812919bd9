"""Sliding-window fusion metrics: multi-scale pixel VIF and SSIM (both conventions).

Inputs are float64 grey images on the 0..255 scale (see :mod:`pipeline.metrics`);
A = infrared, B = visible, F = fused. Definitions follow ``pipeline/metrics/METRICS.md``.
Gaussian windows are MATLAB's ``fspecial('gaussian', N, sigma)``; being separable, they are
applied as two 1-D passes (OpenCV), which equals the 2-D filter up to float rounding.
"""

from __future__ import annotations

import math
from functools import cache

import cv2
import numpy as np
from skimage.metrics import structural_similarity

VIF_NOISE_VAR = 2.0  # sigma_n^2 of Sheikh and Bovik's vifp_mscale
VIF_EPS = 1e-10
VIF_SCALES = 4
VIF_MIN_SIDE = 41  # smallest side for which all four 'valid' scales are non-empty


@cache
def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    """1-D taps whose outer product is MATLAB's normalised ``fspecial('gaussian', size, sigma)``."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    taps = np.exp(-(x * x) / (2.0 * sigma * sigma))
    # fspecial zeroes entries below eps * max of the 2-D kernel; for the windows used here
    # (sigma >= size / 7.4) the smallest corner is far above that, so nothing is zeroed.
    assert taps[0] ** 2 > np.finfo(np.float64).eps * taps.max() ** 2
    taps /= taps.sum()
    taps.setflags(write=False)
    return taps


def filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """``filter2(w, image, 'valid')`` for the symmetric separable window ``outer(taps, taps)``."""
    radius = (taps.size - 1) // 2
    height, width = image.shape[:2]
    if height < taps.size or width < taps.size:
        raise ValueError(f"image {height}x{width} is smaller than the {taps.size}-tap window")
    out = cv2.sepFilter2D(image, cv2.CV_64F, taps, taps, borderType=cv2.BORDER_CONSTANT)
    return out[radius : height - radius, radius : width - radius]


def _vif_terms(
    mu1: np.ndarray, ref_sq: np.ndarray, cross: np.ndarray, mu2: np.ndarray, s2: np.ndarray
) -> tuple[float, float]:
    """Numerator and denominator sums of one source at one scale, from filtered planes.

    ``s2`` is the clipped local variance of the distorted image. The reference code's masking
    sequence leaves g = 0 (a zero numerator term) wherever s1 < eps, s2 < eps or g < 0, and
    s1 = 0 (a zero denominator term) wherever s1 < eps; only the other pixels are summed.
    """
    s1 = ref_sq - mu1 * mu1
    np.maximum(s1, 0.0, out=s1)
    s12 = cross - mu1 * mu2
    g = s12 / (s1 + VIF_EPS)
    sv = s2 - g * s12
    np.maximum(sv, VIF_EPS, out=sv)
    live1 = s1 >= VIF_EPS
    keep = live1 & (s2 >= VIF_EPS) & (g >= 0)
    g *= g
    g *= s1
    sv += VIF_NOISE_VAR
    g /= sv
    num = np.log10(1.0 + g[keep]).sum()
    den = np.log10(1.0 + s1[live1] / VIF_NOISE_VAR).sum()
    return float(num), float(den)


def vifp_many(refs: list[np.ndarray], dist: np.ndarray, convention: str = "matlab") -> list[float]:
    """vifp(ref, dist) for each reference against one distorted image (shared filtering).

    Sheikh and Bovik's multi-scale pixel-domain VIF (``vifp_mscale.m``), as defined in
    :func:`vif`. A constant reference gives 0/0: NaN under ``matlab`` (as MATLAB's division),
    1.0 under ``cddfuse`` (its evaluator replaces a NaN term by 1).
    """
    if min(dist.shape) < VIF_MIN_SIDE:
        raise ValueError(f"VIF needs images of at least {VIF_MIN_SIDE} px a side, got {dist.shape}")
    nums, dens = [0.0] * len(refs), [0.0] * len(refs)
    for scale in range(1, VIF_SCALES + 1):
        size = 2 ** (VIF_SCALES + 1 - scale) + 1
        taps = gaussian_taps(size, size / 5.0)
        if scale > 1:
            refs = [np.ascontiguousarray(filter_valid(r, taps)[::2, ::2]) for r in refs]
            dist = np.ascontiguousarray(filter_valid(dist, taps)[::2, ::2])
        mu2 = filter_valid(dist, taps)
        s2 = np.maximum(filter_valid(dist * dist, taps) - mu2 * mu2, 0.0)
        for i, ref in enumerate(refs):
            num, den = _vif_terms(
                filter_valid(ref, taps),
                filter_valid(ref * ref, taps),
                filter_valid(ref * dist, taps),
                mu2,
                s2,
            )
            nums[i] += num
            dens[i] += den
    terms = []
    for num, den in zip(nums, dens, strict=True):
        with np.errstate(invalid="ignore", divide="ignore"):
            term = float(np.float64(num) / np.float64(den))
        terms.append(1.0 if math.isnan(term) and convention == "cddfuse" else term)
    return terms


def vifp(ref: np.ndarray, dist: np.ndarray, convention: str = "matlab") -> float:
    """One VIF term, vifp(ref, dist), with ``ref`` the reference (see :func:`vif`)."""
    return vifp_many([ref], dist, convention)[0]


def vif(a: np.ndarray, b: np.ndarray, f: np.ndarray, convention: str = "matlab") -> float:
    """VIF = vifp(A, F) + vifp(B, F): multi-scale pixel-domain visual information fidelity.

    Sheikh and Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006, in the
    pixel-domain form of their ``vifp_mscale.m``, with each source as the reference. For
    scale s = 1..4 a Gaussian window of N = 2^(5-s) + 1 taps (17, 9, 5, 3) and sigma N/5 is used;
    for s > 1 both images are first filtered with it ('valid') and decimated by 2. Local
    statistics ('valid'): mu, s1 = var(ref), s2 = var(dist) (negatives clipped to 0),
    s12 = cov. g = s12 / (s1 + 1e-10), sv = s2 - g s12, then in this order: where s1 < 1e-10
    g = 0, sv = s2, s1 = 0; where s2 < 1e-10 g = sv = 0; where g < 0 sv = s2, g = 0;
    sv = max(sv, 1e-10). With sigma_n^2 = 2:

        vifp = sum_{scales, pixels} log10(1 + g^2 s1 / (sv + 2)) / sum log10(1 + s1 / 2)

    A constant source gives 0/0: NaN under ``matlab`` (as MATLAB's division), 1.0 under
    ``cddfuse`` (its evaluator replaces a NaN term by 1). Not Han et al.'s 2013 VIFF.
    """
    return float(sum(vifp_many([a, b], f, convention)))


SSIM_MATLAB_SIZE = 11
SSIM_MATLAB_SIGMA = 1.5
SSIM_C1 = (0.01 * 255.0) ** 2
SSIM_C2 = (0.03 * 255.0) ** 2
SSIM_CDDFUSE_DATA_RANGE = 2.0


def _ssim_wang(
    mu1: np.ndarray, mu2: np.ndarray, xx: np.ndarray, yy: np.ndarray, xy: np.ndarray
) -> float:
    """Mean SSIM map of Wang et al. from the filtered planes x, y, x^2, y^2 and x y."""
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1, s2, s12 = xx - mu1_sq, yy - mu2_sq, xy - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + SSIM_C1) * (2 * s12 + SSIM_C2)) / (
        (mu1_sq + mu2_sq + SSIM_C1) * (s1 + s2 + SSIM_C2)
    )
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray, f: np.ndarray, convention: str = "matlab") -> float:
    """SSIM = SSIM(F, A) + SSIM(F, B), structural similarity (sum over the two sources).

    Wang, Bovik, Sheikh and Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13(4), 2004:

        SSIM(x, y) = mean of (2 mu_x mu_y + C1)(2 s_xy + C2)
                            / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) over the windows

    ``matlab``: ``ssim_index.m`` — 11 x 11 Gaussian window, sigma 1.5, C1 = (0.01 * 255)^2,
    C2 = (0.03 * 255)^2, mean over the 'valid' region. ``cddfuse``: scikit-image's
    ``structural_similarity`` with its 7 x 7 uniform window, sample covariance and
    ``data_range = 2.0`` (the effective setting of CDDFuse's evaluator, images on 0..255).
    Identical images give 2.
    """
    if convention == "cddfuse":
        return float(
            structural_similarity(f, a, data_range=SSIM_CDDFUSE_DATA_RANGE)
            + structural_similarity(f, b, data_range=SSIM_CDDFUSE_DATA_RANGE)
        )
    taps = gaussian_taps(SSIM_MATLAB_SIZE, SSIM_MATLAB_SIGMA)
    mu_f, ff = filter_valid(f, taps), filter_valid(f * f, taps)
    total = 0.0
    for src in (a, b):
        mu_s, ss, fs = (filter_valid(x, taps) for x in (src, src * src, f * src))
        total += _ssim_wang(mu_f, mu_s, ff, ss, fs)
    return total
