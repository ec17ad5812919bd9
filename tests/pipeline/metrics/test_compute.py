"""Fusion metrics: hand-computable cases, convention differences, independent cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import convolve2d, correlate2d
from skimage.metrics import structural_similarity

from pipeline import metrics as M
from pipeline.core.imageio import read_image, write_image

H, W = 57, 67  # odd sizes, above the 41-pixel minimum of VIF's four scales


def _smooth_image(seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    """A textured 8-bit image: blurred noise plus a bright disc and a step edge."""
    rng = np.random.default_rng(seed)
    noise = rng.random(shape)
    kernel = np.outer(np.hanning(7), np.hanning(7))
    blurred = convolve2d(noise, kernel / kernel.sum(), mode="same", boundary="symm")
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    disc = ((yy - shape[0] * 0.4) ** 2 + (xx - shape[1] * (0.3 + 0.1 * seed)) ** 2) < 60
    img = 60 + 120 * blurred + 60 * disc + 25 * (xx > shape[1] * 0.7) + rng.normal(0, 4, shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a8, b8 = _smooth_image(1), _smooth_image(2)
    f8 = ((a8.astype(np.int32) + b8 + 1) // 2).astype(np.uint8)
    f8[10:14, 20:40] = 250  # an artefact edge found in neither source
    return a8, b8, f8


def _f64(*images: np.ndarray) -> list[np.ndarray]:
    return [x.astype(np.float64) for x in images]


# --- independent straightforward implementations of METRICS.md (2-D filters, no tricks) -----


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    r = (size - 1) / 2
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(float).eps * h.max()] = 0
    return h / h.sum()


def _ref_vifp(ref: np.ndarray, dist: np.ndarray) -> float:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        win = _fspecial_gaussian(n, n / 5)
        if scale > 1:
            ref = correlate2d(ref, win, mode="valid")[::2, ::2]
            dist = correlate2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = correlate2d(ref, win, "valid"), correlate2d(dist, win, "valid")
        s1 = np.maximum(correlate2d(ref * ref, win, "valid") - mu1**2, 0)
        s2 = np.maximum(correlate2d(dist * dist, win, "valid") - mu2**2, 0)
        s12 = correlate2d(ref * dist, win, "valid") - mu1 * mu2
        g = s12 / (s1 + 1e-10)
        sv = s2 - g * s12
        m = s1 < 1e-10
        g[m], sv[m], s1[m] = 0, s2[m], 0
        m = s2 < 1e-10
        g[m], sv[m] = 0, 0
        m = g < 0
        sv[m], g[m] = s2[m], 0
        sv = np.maximum(sv, 1e-10)
        num += np.sum(np.log10(1 + g * g * s1 / (sv + 2)))
        den += np.sum(np.log10(1 + s1 / 2))
    return num / den


def _ref_qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]])
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]])

    def edges(x):
        sx, sy = convolve2d(x, h3, "same"), convolve2d(x, h1, "same")
        alpha = np.full(x.shape, np.pi / 2)
        nz = sx != 0
        alpha[nz] = np.arctan(sy[nz] / sx[nz])
        return np.sqrt(sx**2 + sy**2), alpha

    def q(gs, as_, gf, af):
        rel = gf.copy()  # equal strengths keep gF, as the reference code does
        rel[gs > gf] = gf[gs > gf] / gs[gs > gf]
        rel[gs < gf] = gs[gs < gf] / gf[gs < gf]
        orient = 1 - np.abs(as_ - af) / (np.pi / 2)
        q_g = 0.9994 / (1 + np.exp(-15 * (rel - 0.5)))
        return q_g * 0.9879 / (1 + np.exp(-22 * (orient - 0.8)))

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)
    return np.sum(q(ga, aa, gf, af) * ga + q(gb, ab, gf, af) * gb) / np.sum(ga + gb)


def _ref_nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    kv = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    kh = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]) / 8

    def edges(x):
        xp = np.pad(x, 1, mode="reflect")  # numpy 'reflect' = d c b | a b c d (reflect-101)
        gv, gh = correlate2d(xp, kv, "valid"), correlate2d(xp, kh, "valid")
        angle = np.zeros(x.shape)
        nz = (gv != 0) | (gh != 0)
        with np.errstate(divide="ignore"):
            angle[nz] = np.arctan(gv[nz] / gh[nz])
        return np.sqrt(gh**2 + gv**2), angle

    def q(gs, as_, gf, af):
        rel = np.zeros(gs.shape)
        ok = (gs != 0) & (gf != 0)
        rel[ok] = np.minimum(gs, gf)[ok] / np.maximum(gs, gf)[ok]
        orient = np.abs(np.abs(as_ - af) - np.pi / 2) * 2 / np.pi
        qg = 0.9999 / (1 + np.exp(-19 * (rel - 0.5)))
        return np.sqrt(qg * 0.9995 / (1 + np.exp(-22 * (orient - 0.5))))

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)
    wa = np.where(ga >= 2, ga**1.5, 0.001)
    wb = np.where(gb >= 2, gb**1.5, 0.001)
    art = (gf > ga) & (gf > gb)
    return np.sum(art * ((1 - q(ga, aa, gf, af)) * wa + (1 - q(gb, ab, gf, af)) * wb)) / np.sum(
        wa + wb
    )


# --- API ----------------------------------------------------------------------------------


def test_names_and_directions():
    assert M.METRIC_NAMES == [
        "EN", "SD", "SF", "AG", "MI", "SCD", "CC", "VIF", "Qabf", "Nabf", "SSIM", "PSNR",
    ]  # fmt: skip
    assert set(M.METRIC_DIRECTION) == set(M.METRIC_NAMES)
    assert M.METRIC_DIRECTION["Nabf"] == "lower"
    assert {v for k, v in M.METRIC_DIRECTION.items() if k != "Nabf"} == {"higher"}


@pytest.mark.parametrize("convention", ["matlab", "cddfuse"])
def test_compute_metrics_keys_odd_size_and_finite(triple, convention):
    a8, b8, f8 = triple
    result = M.compute_metrics(a8, b8, f8, convention)
    assert list(result) == M.METRIC_NAMES
    finite = {k: math.isfinite(v) for k, v in result.items()}
    assert finite == {k: not (k == "Nabf" and convention == "cddfuse") for k in M.METRIC_NAMES}
    assert all(isinstance(v, float) for v in result.values())


def test_float_input_equals_uint8_and_saved_png(triple, tmp_path):
    a8, b8, f8 = triple
    fused = np.clip(f8 / 255.0 + 0.3 / 255, 0, 1).astype(np.float32)  # not on the 8-bit grid
    path = write_image(tmp_path / "fused.png", fused)
    from_memory = M.compute_metrics(a8 / 255.0, b8 / 255.0, fused)
    from_file = M.compute_metrics(a8, b8, read_image(path))
    assert from_memory == from_file


def test_colour_becomes_rounded_bt601_luma():
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)  # 76.245 -> 76
    rgb[0, 1] = (0, 255, 0)  # 149.685 -> 150
    rgb[0, 2] = (0, 0, 255)  # 29.07 -> 29
    rgb[1, :] = (200, 100, 50)  # 59.8 + 58.7 + 5.7 = 124.2 -> 124
    expected = np.array([[76, 150, 29], [124, 124, 124]], np.uint8)
    assert np.array_equal(M.prepare_image(rgb), expected)
    assert np.array_equal(M.prepare_image(rgb / 255.0), expected)


def test_input_validation(triple):
    a8, b8, f8 = triple
    with pytest.raises(ValueError, match=r"ir \(57, 67\).*fused \(57, 66\)"):
        M.compute_metrics(a8, b8, f8[:, :-1])
    with pytest.raises(ValueError, match="2-D grey or HxWx3"):
        M.compute_metrics(a8[None], b8, f8)
    with pytest.raises(ValueError, match="0..1 scale"):
        M.compute_metrics(a8.astype(np.float32), b8, f8)  # float data on 0..255
    with pytest.raises(ValueError, match="unsupported pixel type"):
        M.compute_metrics(a8.astype(np.int64), b8, f8)
    with pytest.raises(ValueError, match="at least 41"):
        M.compute_metrics(a8[:40], b8[:40], f8[:40])
    with pytest.raises(ValueError, match="unknown convention"):
        M.compute_metrics(a8, b8, f8, "python")


# --- EN, SD, SF, AG ------------------------------------------------------------------------


def test_constant_image_has_no_information():
    f8 = np.full((48, 50), 77, np.uint8)
    f = f8.astype(np.float64)
    assert M.entropy(f8) == 0.0
    assert M.standard_deviation(f) == 0.0
    assert M.spatial_frequency(f) == 0.0
    assert M.average_gradient(f, "matlab") == M.average_gradient(f, "cddfuse") == 0.0


def test_entropy_and_sd_of_equiprobable_levels():
    f8 = np.tile(np.array([0, 100, 200, 250], np.uint8), (10, 5))  # 4 equally frequent levels
    assert M.entropy(f8) == pytest.approx(2.0, abs=1e-12)
    two = np.tile(np.array([[0, 100]], np.uint8), (6, 4))
    assert M.entropy(two) == pytest.approx(1.0, abs=1e-12)
    assert M.standard_deviation(two.astype(np.float64)) == pytest.approx(50.0, abs=1e-12)


def test_horizontal_ramp_sf_and_ag_both_normalisations():
    step, height, width = 3.0, 45, 60
    f = np.tile(np.arange(width) * step, (height, 1))
    assert M.spatial_frequency(f) == pytest.approx(step)  # RF = step, CF = 0
    s = step / math.sqrt(2)  # Gx = step everywhere (one-sided borders too), Gy = 0
    assert M.average_gradient(f, "cddfuse") == pytest.approx(s)
    expected = s * height * width / ((height - 1) * (width - 1))
    assert M.average_gradient(f, "matlab") == pytest.approx(expected)


def test_ag_conventions_differ_by_pixel_count(triple):
    f = triple[2].astype(np.float64)
    ratio = M.average_gradient(f, "matlab") / M.average_gradient(f, "cddfuse")
    assert ratio == pytest.approx(H * W / ((H - 1) * (W - 1)), rel=1e-12)


# --- MI ------------------------------------------------------------------------------------


def test_mi_of_identical_images_is_twice_the_entropy(triple):
    a8 = triple[0]
    assert M.mutual_information(a8, a8, a8, "matlab") == pytest.approx(2 * M.entropy(a8))


def test_mi_of_independent_patterns_is_zero():
    yy, xx = np.mgrid[0:48, 0:48]
    a8 = ((xx % 2) * 200).astype(np.uint8)  # columns alternate
    f8 = ((yy % 2) * 200).astype(np.uint8)  # rows alternate: independent of a8
    assert M.mutual_information(a8, a8, f8) == pytest.approx(0.0, abs=1e-12)


def test_mi_bits_versus_nats(triple):
    a8, b8, f8 = triple
    bits = M.mutual_information(a8, b8, f8, "matlab")
    nats = M.mutual_information(a8, b8, f8, "cddfuse")
    assert bits > 0
    assert nats / bits == pytest.approx(math.log(2), rel=1e-12)


# --- SCD, CC --------------------------------------------------------------------------------


def test_cc_and_scd_symmetries_and_known_values(triple):
    a, b, f = _f64(*triple)
    assert M.correlation_coefficient(a, b, f) == pytest.approx(M.correlation_coefficient(b, a, f))
    assert M.scd(a, b, f) == pytest.approx(M.scd(b, a, f))
    # Pearson correlation ignores affine rescaling of all three images.
    assert M.scd(2 * a + 5, 2 * b + 5, 2 * f + 10) == pytest.approx(M.scd(a, b, f))
    assert M.correlation_coefficient(a, a, a) == pytest.approx(1.0)
    assert M.correlation_coefficient(a, 255 - a, a) == pytest.approx(0.0, abs=1e-12)
    assert M.scd(a, b, a + b) == pytest.approx(2.0)  # F - B = A and F - A = B


def test_cc_of_constant_image_is_nan():
    a = np.full((45, 45), 9.0)
    b = np.arange(45 * 45, dtype=np.float64).reshape(45, 45)
    assert math.isnan(M.correlation_coefficient(a, b, b))


# --- VIF ------------------------------------------------------------------------------------


def test_vif_term_of_identical_images_is_one(triple):
    a, b, _ = _f64(*triple)
    assert M.vifp(a, a) == pytest.approx(1.0, abs=1e-6)
    assert M.vif(a, b, a) == pytest.approx(1.0 + M.vifp(b, a), abs=1e-9)
    assert M.vif(a, a, a) == pytest.approx(2.0, abs=1e-6)


def test_vif_matches_straightforward_2d_implementation(triple):
    a, b, f = _f64(*triple)
    expected = _ref_vifp(a, f) + _ref_vifp(b, f)
    for convention in M.CONVENTIONS:
        assert M.vif(a, b, f, convention) == pytest.approx(expected, rel=1e-9)


def test_vif_of_constant_source_per_convention(triple):
    a = np.full((H, W), 128.0)
    b, f = _f64(triple[1], triple[2])
    assert math.isnan(M.vif(a, b, f, "matlab"))  # 0/0 as in MATLAB
    assert M.vif(a, b, f, "cddfuse") == pytest.approx(1.0 + M.vifp(b, f), rel=1e-12)


# --- Qabf, Nabf -------------------------------------------------------------------------------


def test_qabf_of_identical_images_is_its_plateau(triple):
    a = triple[0].astype(np.float64)
    # G_AF = gF where equal (gF >= 1 on integer images, so Qg ~ 0.9994); A_AF = 1.
    q_a = 0.9879 / (1 + math.exp(-22 * 0.2))
    assert M.qabf(a, a, a) == pytest.approx(0.9994 * q_a, abs=1e-3)
    assert M.qabf(a, a, a) == pytest.approx(_ref_qabf(a, a, a), rel=1e-12)


def test_qabf_matches_straightforward_implementation(triple):
    a, b, f = _f64(*triple)
    assert M.qabf(a, b, f) == pytest.approx(_ref_qabf(a, b, f), rel=1e-12)
    assert 0 < M.qabf(a, b, f) < 1


def test_nabf_zero_without_stronger_gradients(triple):
    a, b, _ = _f64(*triple)
    assert M.nabf(a, b, a) == 0.0  # F = A: gF > gA nowhere
    assert M.nabf(a, b, np.full_like(a, 100.0)) == 0.0  # flat F


def test_nabf_matches_straightforward_implementation(triple):
    a, b, f = _f64(*triple)
    value = M.nabf(a, b, f)
    assert value > 0  # the fixture's artefact edge
    assert value == pytest.approx(_ref_nabf(a, b, f), rel=1e-12)
    noisy = np.clip(f + np.random.default_rng(0).normal(0, 20, f.shape), 0, 255).round()
    assert M.nabf(a, b, noisy) > value


def test_nabf_only_in_matlab_convention(triple):
    assert math.isnan(M.compute_metrics(*triple, convention="cddfuse")["Nabf"])
    assert M.compute_metrics(*triple, convention="matlab")["Nabf"] > 0


# --- SSIM, PSNR -------------------------------------------------------------------------------


@pytest.mark.parametrize("convention", ["matlab", "cddfuse"])
def test_ssim_of_identical_images_is_two(triple, convention):
    a = triple[0].astype(np.float64)
    assert M.ssim(a, a, a, convention) == pytest.approx(2.0, abs=1e-12)


def test_ssim_matlab_equals_gaussian_valid_ssim_of_scikit_image(triple):
    a, b, f = _f64(*triple)
    # 11 x 11 Gaussian (sigma 1.5, truncate 3.5 -> radius 5), population covariance,
    # C from data range 255, mean over the border-free region = ssim_index.m's 'valid' mean.
    opts = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    expected = structural_similarity(f, a, **opts) + structural_similarity(f, b, **opts)
    assert M.ssim(a, b, f, "matlab") == pytest.approx(expected, rel=1e-10)


def test_ssim_cddfuse_is_uniform_7x7_sample_covariance_with_range_2(triple):
    from scipy.ndimage import uniform_filter

    a, b, f = _f64(*triple)

    def ssim_uniform(x, y):
        n = 49
        mx, my = uniform_filter(x, 7), uniform_filter(y, 7)
        cov = n / (n - 1)
        vx = cov * (uniform_filter(x * x, 7) - mx * mx)
        vy = cov * (uniform_filter(y * y, 7) - my * my)
        vxy = cov * (uniform_filter(x * y, 7) - mx * my)
        c1, c2 = (0.01 * 2.0) ** 2, (0.03 * 2.0) ** 2
        s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        return s[3:-3, 3:-3].mean()

    expected = ssim_uniform(f, a) + ssim_uniform(f, b)
    assert M.ssim(a, b, f, "cddfuse") == pytest.approx(expected, rel=1e-9)
    skimage_value = structural_similarity(f, a, data_range=2.0) + structural_similarity(
        f, b, data_range=2.0
    )
    assert M.ssim(a, b, f, "cddfuse") == pytest.approx(skimage_value, rel=1e-12)
    assert M.ssim(a, b, f, "cddfuse") != pytest.approx(M.ssim(a, b, f, "matlab"), rel=1e-3)


def test_psnr_forms_by_hand():
    a = np.zeros((45, 45))
    f = np.full((45, 45), 10.0)  # MSE = 100 on 0..255 against both sources
    assert M.psnr(a, a, f, "cddfuse") == pytest.approx(0.0, abs=1e-12)  # 10 log10(10^2 / 100)
    usual = 10 * math.log10(255**2 / 100)
    assert M.psnr(a, a, f, "matlab") == pytest.approx(usual + 20 * math.log10(255), rel=1e-12)
    assert M.psnr(a, a, f, "matlab") == pytest.approx(76.2616, abs=1e-4)  # 20 log10(255 * 25.5)


def test_psnr_convention_offset(triple):
    a, b, f = _f64(*triple)
    mse = (np.mean((f - a) ** 2) + np.mean((f - b) ** 2)) / 2
    assert M.psnr(a, b, f, "matlab") - 10 * math.log10(255**2 / mse) == pytest.approx(48.1308, 1e-5)
    assert M.psnr(a, b, f, "cddfuse") == pytest.approx(10 * math.log10(f.max() ** 2 / mse))
    assert M.psnr(a, a, a, "matlab") == math.inf


# --- conventions side by side -----------------------------------------------------------------


def test_conventions_agree_where_metrics_md_has_one_definition(triple):
    matlab = M.compute_metrics(*triple, convention="matlab")
    cddfuse = M.compute_metrics(*triple, convention="cddfuse")
    for name in ("EN", "SD", "SF", "SCD", "CC", "VIF", "Qabf"):
        assert matlab[name] == cddfuse[name], name
    for name in ("AG", "MI", "SSIM", "PSNR"):
        assert matlab[name] != pytest.approx(cddfuse[name], rel=1e-6), name


def test_mean_metrics():
    rows = [dict.fromkeys(M.METRIC_NAMES, 1.0), dict.fromkeys(M.METRIC_NAMES, 3.0)]
    rows[1]["Nabf"] = math.nan
    mean = M.mean_metrics(rows)
    assert mean["EN"] == 2.0 and math.isnan(mean["Nabf"])
    with pytest.raises(ValueError):
        M.mean_metrics([])
