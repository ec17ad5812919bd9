"""Infrared/visible fusion metrics in the two conventions of published tables.

``compute_metrics(ir, vis, fused, convention)`` scores one image triple with EN, SD, SF, AG,
MI, SCD, CC, VIF, Qabf, Nabf, SSIM and PSNR exactly as ``pipeline/metrics/METRICS.md`` defines them:

- ``matlab`` (default): the MATLAB evaluation toolbox of the IVIF literature
  (analysis_Reference.m, vifp_mscale.m, analysis_Qabf.m, analysis_nabf.m, and its Python port);
- ``cddfuse``: the Python evaluator published with CDDFuse (CVPR 2023), reused by DDFM, EMMA, FILM.

They differ in MI (bits vs nats), AG (normalised by (H-1)(W-1) vs H W), SSIM (window and
constants), PSNR (form), Nabf (matlab only: NaN under cddfuse) and VIF of a constant source
(NaN vs 1). A = infrared, B = visible, F = fused; every input is first reduced to 8-bit grey
(colour -> BT.601 luma), as both reference codes read 8-bit image files: EN and MI use those
integers, every other metric the same values as float64 on the 0..255 scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from models.luma import LUMA_WEIGHTS
from pipeline.core.imageio import to_uint8
from pipeline.core.params import Convention
from pipeline.metrics.edge import nabf, qabf
from pipeline.metrics.window import VIF_MIN_SIDE, ssim, vif, vifp

CONVENTIONS: tuple[str, ...] = tuple(Convention)
METRIC_NAMES: list[str] = [
    "EN", "SD", "SF", "AG", "MI", "SCD", "CC", "VIF", "Qabf", "Nabf", "SSIM", "PSNR",
]  # fmt: skip
METRIC_DIRECTION: dict[str, str] = {name: "higher" for name in METRIC_NAMES} | {"Nabf": "lower"}


def beats(metric: str, new: float, old: float) -> bool:
    """Whether ``new`` is strictly better than ``old`` on ``metric`` (:data:`METRIC_DIRECTION`)."""
    return new > old if METRIC_DIRECTION[metric] == "higher" else new < old


MIN_SIDE = VIF_MIN_SIDE

__all__ = [
    "CONVENTIONS",
    "MIN_SIDE",
    "Convention",
    "METRIC_DIRECTION",
    "METRIC_NAMES",
    "average_gradient",
    "beats",
    "compute_metrics",
    "correlation_coefficient",
    "entropy",
    "mean_metrics",
    "mutual_information",
    "nabf",
    "prepare_image",
    "psnr",
    "qabf",
    "scd",
    "spatial_frequency",
    "ssim",
    "standard_deviation",
    "vif",
    "vifp",
]


def prepare_image(image: np.ndarray, role: str = "image") -> np.ndarray:
    """An image as the metrics see it: 8-bit grey (H, W) uint8.

    Accepts what ``pipeline.imageio.read_image`` returns (float on 0..1, grey HxW or colour
    HxWx3) or uint8 on 0..255. Floats are rounded to 8 bits exactly as ``write_image`` saves
    them, so an in-memory result scores the same as its saved PNG; colour then becomes BT.601
    luma (0.299 R + 0.587 G + 0.114 B in float64), rounded to 8 bits.
    """
    image = np.asarray(image)
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(
            f"{role}: expected a 2-D grey or HxWx3 colour image, got shape {image.shape}"
        )
    if np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)) or image.min() < -1e-6 or image.max() > 1.0 + 1e-6:
            raise ValueError(
                f"{role}: float images must hold finite values on the 0..1 scale "
                "(as read_image returns them); pass uint8 for 0..255 data"
            )
        image = to_uint8(image)
    elif image.dtype != np.uint8:
        raise ValueError(f"{role}: unsupported pixel type {image.dtype} (use uint8 or float 0..1)")
    if image.ndim == 3:
        luma = image.astype(np.float64) @ np.asarray(LUMA_WEIGHTS, dtype=np.float64)
        image = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return image


def entropy(f8: np.ndarray) -> float:
    """EN = -sum_l p_l log2 p_l over the 256-bin normalised histogram of 8-bit F (0 log 0 = 0).

    Shannon information entropy (Roberts, van Aardt and Ahmed, J. Appl. Remote Sens. 2, 2008).
    """
    p = np.bincount(f8.ravel(), minlength=256) / f8.size
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def standard_deviation(f: np.ndarray) -> float:
    """SD = sqrt(mean((F - mean F)^2)), the population standard deviation (ddof = 0)."""
    return float(np.std(f))


def spatial_frequency(f: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) (Eskicioglu and Fisher, IEEE Trans. Commun. 43(12), 1995).

    RF^2 = mean of (F[i, j] - F[i, j-1])^2 over the H x (W-1) horizontal neighbours,
    CF^2 = mean of (F[i, j] - F[i-1, j])^2 over the (H-1) x W vertical ones.
    """
    rf2 = np.mean(np.square(np.diff(f, axis=1)))
    cf2 = np.mean(np.square(np.diff(f, axis=0)))
    return float(np.sqrt(rf2 + cf2))


def average_gradient(f: np.ndarray, convention: Convention = "matlab") -> float:
    """AG: mean local gradient magnitude (Cui et al., Opt. Commun. 341, 2015).

    Gx, Gy as ``numpy.gradient`` (and MATLAB ``gradient``) give them: central differences
    inside, one-sided at the borders; s = sqrt((Gx^2 + Gy^2) / 2).
    ``matlab``: AG = sum(s) / ((H-1)(W-1)); ``cddfuse``: AG = mean(s) over H x W.
    """
    gy, gx = np.gradient(f)
    s = np.sqrt((gx * gx + gy * gy) / 2.0)
    if convention == "cddfuse":
        return float(np.mean(s))
    height, width = f.shape
    return float(np.sum(s) / ((height - 1) * (width - 1)))


def _mutual_information_nats(x8: np.ndarray, y8: np.ndarray) -> float:
    """I(X;Y) in nats from the exact 256 x 256 joint histogram of two 8-bit images."""
    joint = np.bincount(x8.ravel().astype(np.intp) * 256 + y8.ravel(), minlength=256 * 256)
    p_xy = joint.reshape(256, 256) / x8.size
    p_x = p_xy.sum(axis=1, keepdims=True)
    p_y = p_xy.sum(axis=0, keepdims=True)
    nz = p_xy > 0
    return float(np.sum(p_xy[nz] * np.log(p_xy[nz] / (p_x @ p_y)[nz])))


def mutual_information(
    a8: np.ndarray, b8: np.ndarray, f8: np.ndarray, convention: Convention = "matlab"
) -> float:
    """MI = I(A;F) + I(B;F), I(X;F) = sum p(x, f) log(p(x, f) / (p(x) p(f))) (Qu et al., 2002).

    Exact 256 x 256 joint histograms of the 8-bit images. ``matlab``: log2 (bits);
    ``cddfuse``: natural log (nats, as ``sklearn.metrics.mutual_info_score``).
    """
    nats = _mutual_information_nats(a8, f8) + _mutual_information_nats(b8, f8)
    return nats if convention == "cddfuse" else nats / math.log(2.0)


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over all pixels (NaN when either image is constant)."""
    xm, ym = (x - x.mean()).ravel(), (y - y.mean()).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(xm @ ym) / np.sqrt((xm @ xm) * (ym @ ym)))


def scd(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B), the sum of the correlations of differences.

    Aslantas and Bendes, "A new image quality metric for image fusion: the sum of the
    correlations of differences", AEU 69(12), 2015. corr = Pearson correlation over all pixels.
    """
    return _corr(f - b, a) + _corr(f - a, b)


def correlation_coefficient(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """CC = (corr(A, F) + corr(B, F)) / 2, corr = Pearson correlation over all pixels."""
    return (_corr(a, f) + _corr(b, f)) / 2.0


def psnr(a: np.ndarray, b: np.ndarray, f: np.ndarray, convention: Convention = "matlab") -> float:
    """PSNR from MSE = (mean((F - A)^2) + mean((F - B)^2)) / 2.

    ``matlab``: MSE on the [0, 1] scale and PSNR = 20 log10(255 / sqrt(MSE)) (the toolbox's
    form: the usual PSNR + 48.13 dB). ``cddfuse``: MSE on the 0..255 scale and
    PSNR = 10 log10(max(F)^2 / MSE). F equal to both sources gives +inf.
    """
    da, db = (f - a).ravel(), (f - b).ravel()
    mse = (np.float64(da @ da) + np.float64(db @ db)) / (2.0 * f.size)  # 0..255 scale
    with np.errstate(divide="ignore"):
        if convention == "cddfuse":
            return float(10.0 * np.log10(np.max(f) ** 2 / mse))
        return float(20.0 * np.log10(255.0 / np.sqrt(mse / 255.0**2)))


def compute_metrics(
    ir: np.ndarray, vis: np.ndarray, fused: np.ndarray, convention: Convention = "matlab"
) -> dict[str, float]:
    """All metrics of one triple, keyed and ordered as ``METRIC_NAMES``.

    ``ir``, ``vis``, ``fused``: float 0..1 (as ``read_image`` returns) or uint8 images, grey or
    colour, all of the same height and width (at least ``MIN_SIDE`` pixels, for VIF's scales).
    Nabf is NaN under ``cddfuse``, whose evaluator does not define it.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r} (use one of {', '.join(CONVENTIONS)})")
    a8, b8, f8 = (
        prepare_image(x, role) for x, role in ((ir, "ir"), (vis, "vis"), (fused, "fused"))
    )
    if not a8.shape == b8.shape == f8.shape:
        raise ValueError(
            f"image sizes differ: ir {a8.shape}, vis {b8.shape}, fused {f8.shape} (H, W)"
        )
    if min(f8.shape) < MIN_SIDE:
        raise ValueError(f"images must be at least {MIN_SIDE} x {MIN_SIDE} pixels, got {f8.shape}")
    a, b, f = (x.astype(np.float64) for x in (a8, b8, f8))
    values = {
        "EN": entropy(f8),
        "SD": standard_deviation(f),
        "SF": spatial_frequency(f),
        "AG": average_gradient(f, convention),
        "MI": mutual_information(a8, b8, f8, convention),
        "SCD": scd(a, b, f),
        "CC": correlation_coefficient(a, b, f),
        "VIF": vif(a, b, f, convention),
        "Qabf": qabf(a, b, f),
        "Nabf": nabf(a, b, f) if convention == "matlab" else math.nan,
        "SSIM": ssim(a, b, f, convention),
        "PSNR": psnr(a, b, f, convention),
    }
    return {name: float(values[name]) for name in METRIC_NAMES}


def mean_metrics(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Per-metric arithmetic mean over images (a NaN in any image makes that mean NaN)."""
    rows = list(rows)
    if not rows:
        raise ValueError("no metric rows to average")
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
