"""Classical fusion baselines: exact values, odd sizes, Laplacian-pyramid behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.baselines import BASELINES, average, laplacian_pyramid, maximum
from pipeline.metrics import spatial_frequency


def _pair(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)


def test_registry():
    assert list(BASELINES) == ["average", "max", "laplacian"]
    assert BASELINES["laplacian"] is laplacian_pyramid


@pytest.mark.parametrize("name", list(BASELINES))
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 4), (37, 53), (61, 64)])
def test_output_size_type_and_range(name, shape):
    vis, ir = _pair(shape)
    out = BASELINES[name](vis, ir)
    assert out.shape == shape
    assert out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_average_and_max_values():
    vis = np.array([[0.2, 0.8]], np.float32)
    ir = np.array([[0.6, 0.4]], np.float32)
    np.testing.assert_allclose(average(vis, ir), [[0.4, 0.6]], atol=1e-7)
    np.testing.assert_array_equal(maximum(vis, ir), np.array([[0.6, 0.8]], np.float32))


@pytest.mark.parametrize("shape", [(37, 53), (64, 48)])
def test_laplacian_of_identical_sources_reconstructs_them(shape):
    vis, _ = _pair(shape)
    np.testing.assert_allclose(laplacian_pyramid(vis, vis), vis, atol=1e-5)


def test_laplacian_of_constants_is_their_mean():
    vis = np.full((33, 47), 0.2, np.float32)
    ir = np.full((33, 47), 0.6, np.float32)
    np.testing.assert_allclose(laplacian_pyramid(vis, ir), 0.4, atol=1e-6)


def test_laplacian_keeps_the_stronger_detail():
    yy, xx = np.mgrid[0:63, 0:71]
    texture = (0.5 + 0.4 * np.sign(np.sin(xx / 2.0) * np.sin(yy / 3.0))).astype(np.float32)
    flat = np.full_like(texture, 0.5)
    fused = laplacian_pyramid(texture, flat)
    sf = {
        "laplacian": spatial_frequency(fused.astype(np.float64)),
        "average": spatial_frequency(average(texture, flat).astype(np.float64)),
        "texture": spatial_frequency(texture.astype(np.float64)),
    }
    assert sf["laplacian"] > 1.6 * sf["average"]  # averaging halves the detail
    assert sf["laplacian"] == pytest.approx(sf["texture"], rel=0.15)


@pytest.mark.parametrize("name", list(BASELINES))
def test_bad_inputs(name):
    vis, ir = _pair((20, 30))
    with pytest.raises(ValueError, match=r"vis \(20, 30\), ir \(20, 29\)"):
        BASELINES[name](vis, ir[:, :-1])
    with pytest.raises(ValueError, match="2-D grey"):
        BASELINES[name](np.dstack([vis] * 3), ir)
