"""Edge-transfer fusion metrics of Petrovic's family: Qabf and Nabf.

Inputs are float64 grey images on the 0..255 scale (see :mod:`pipeline.metrics`);
A = infrared, B = visible, F = fused. Definitions follow ``pipeline/metrics/METRICS.md``,
including the two reference codes' different Sobel filtering (true convolution with zero
padding for Qabf, correlation with a mirrored border for Nabf).
"""

from __future__ import annotations

import cv2
import numpy as np

# Qabf (analysis_Qabf.m): Sx with H3, Sy with H1, by true 2-D convolution, zero padding.
_QABF_H1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], dtype=np.float64)
_QABF_H3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
_QABF_TG, _QABF_KG, _QABF_DG = 0.9994, -15.0, 0.5
_QABF_TA, _QABF_KA, _QABF_DA = 0.9879, -22.0, 0.8

# Nabf (analysis_nabf.m): Sobel / 8 by correlation on a reflect-101 border.
_NABF_V = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8.0
_NABF_H = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64) / 8.0
_NABF_TD, _NABF_WT_MIN, _NABF_LG = 2.0, 0.001, 1.5
_NABF_NRG, _NABF_KG, _NABF_SG = 0.9999, 19.0, 0.5
_NABF_NRA, _NABF_KA, _NABF_SA = 0.9995, 22.0, 0.5


def convolve_same_zero(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``conv2(img, kernel, 'same')``: true 2-D convolution (flipped kernel), zero padding."""
    return cv2.filter2D(img, cv2.CV_64F, kernel[::-1, ::-1].copy(), borderType=cv2.BORDER_CONSTANT)


def correlate_mirror(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlation with an odd kernel on a reflect-101 border (d c b | a b c d | c b a)."""
    return cv2.filter2D(img, cv2.CV_64F, kernel, borderType=cv2.BORDER_REFLECT_101)


def _qabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength g and orientation alpha = atan(Sy / Sx) (pi/2 where Sx = 0)."""
    sx = convolve_same_zero(img, _QABF_H3)
    sy = convolve_same_zero(img, _QABF_H1)
    strength = np.sqrt(sx * sx + sy * sy)
    zero = sx == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        alpha = np.where(zero, np.pi / 2, np.arctan(sy / np.where(zero, 1.0, sx)))
    return strength, alpha


def _qabf_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray):
    """Q_SF map: sigmoid of relative strength times sigmoid of relative orientation."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(g_s > g_f, g_f / g_s, np.where(g_s < g_f, g_s / g_f, g_f))
    orient = 1.0 - np.abs(a_s - a_f) / (np.pi / 2)
    q_g = _QABF_TG / (1.0 + np.exp(_QABF_KG * (rel - _QABF_DG)))
    q_a = _QABF_TA / (1.0 + np.exp(_QABF_KA * (orient - _QABF_DA)))
    return q_g * q_a


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Qabf: edge information transferred from the sources to F (same in both conventions).

    Xydeas and Petrovic, "Objective image fusion performance measure", Electronics Letters
    36(4), 2000; as in the toolbox's ``analysis_Qabf.m``. Sobel responses by true 2-D
    convolution with zero padding ('same'): Sx with [-1 0 1; -2 0 2; -1 0 1], Sy with
    [1 2 1; 0 0 0; -1 -2 -1]; g = sqrt(Sx^2 + Sy^2), alpha = atan(Sy / Sx) (pi/2 where Sx = 0).

        G_AF = gF/gA if gA > gF, gA/gF if gA < gF, gF if equal (kept from the reference code)
        A_AF = 1 - |alpha_A - alpha_F| / (pi/2)
        Q_AF = 0.9994 / (1 + exp(-15 (G_AF - 0.5))) * 0.9879 / (1 + exp(-22 (A_AF - 0.8)))
        Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB)

    Sources without any edge give 0/0 = NaN.
    """
    g_a, a_a = _qabf_edges(a)
    g_b, a_b = _qabf_edges(b)
    g_f, a_f = _qabf_edges(f)
    q_af = _qabf_preservation(g_a, a_a, g_f, a_f)
    q_bf = _qabf_preservation(g_b, a_b, g_f, a_f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(q_af * g_a + q_bf * g_b) / np.sum(g_a + g_b))


def _nabf_edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edge strength and orientation atan(gv / gh) (0 where both responses are 0)."""
    gv = correlate_mirror(img, _NABF_V)
    gh = correlate_mirror(img, _NABF_H)
    strength = np.sqrt(gh * gh + gv * gv)
    flat = (gv == 0) & (gh == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.where(flat, 0.0, np.arctan(gv / gh))  # gh = 0, gv != 0 -> +-pi/2
    return strength, angle


def _nabf_preservation(g_s: np.ndarray, a_s: np.ndarray, g_f: np.ndarray, a_f: np.ndarray):
    """Q_SF = sqrt(Qg Qa) with Petrovic's artefact-measure constants."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where((g_s == 0) | (g_f == 0), 0.0, np.minimum(g_s, g_f) / np.maximum(g_s, g_f))
    orient = np.abs(np.abs(a_s - a_f) - np.pi / 2) * 2 / np.pi
    q_g = _NABF_NRG / (1.0 + np.exp(-_NABF_KG * (rel - _NABF_SG)))
    q_a = _NABF_NRA / (1.0 + np.exp(-_NABF_KA * (orient - _NABF_SA)))
    return np.sqrt(q_g * q_a)


def nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Nabf: fusion artefacts, edge strength F adds that no source has (lower is better).

    Petrovic and Xydeas, "Objective image fusion performance characterisation", ICCV 2005,
    as modified by Shreyamsha Kumar, "Multifocus and multispectral image fusion based on pixel
    significance using discrete cosine harmonic wavelet transform", SIVP 7, 2013
    (``analysis_nabf.m``). Sobel / 8 by correlation on a 1-pixel mirror (reflect-101) border;
    g = sqrt(gv^2 + gh^2), a = atan(gv / gh) (0 where both are 0).

        gAF = min(gA, gF) / max(gA, gF) (0 if either is 0); aAF = ||aA - aF| - pi/2| * 2/pi
        Q_AF = sqrt(0.9999 / (1 + exp(-19 (gAF - 0.5))) * 0.9995 / (1 + exp(-22 (aAF - 0.5))))
        w = g^1.5 where g >= 2 else 0.001; artefact pixels N: gF > gA and gF > gB
        Nabf = sum_N((1 - Q_AF) wA + (1 - Q_BF) wB) / sum(wA + wB)

    Defined only by the MATLAB toolbox (the ``cddfuse`` convention reports NaN).
    Zero when F nowhere has a stronger edge than both sources.
    """
    g_a, a_a = _nabf_edges(a)
    g_b, a_b = _nabf_edges(b)
    g_f, a_f = _nabf_edges(f)
    q_af = _nabf_preservation(g_a, a_a, g_f, a_f)
    q_bf = _nabf_preservation(g_b, a_b, g_f, a_f)
    w_a = np.where(g_a >= _NABF_TD, g_a**_NABF_LG, _NABF_WT_MIN)
    w_b = np.where(g_b >= _NABF_TD, g_b**_NABF_LG, _NABF_WT_MIN)
    artefact = (g_f > g_a) & (g_f > g_b)
    num = np.sum(np.where(artefact, (1.0 - q_af) * w_a + (1.0 - q_bf) * w_b, 0.0))
    return float(num / np.sum(w_a + w_b))
