"""Cutting patches from one pair: window statistics, the near-empty filter, seeded subsampling on
odd sizes, and a pair whose images differ in size named with the file. (The whole patches stage,
augmentation included, is in tests/pipeline/stages/test_patches.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.core.imageio import ImageError
from pipeline.core.params import PatchesParams
from pipeline.data.patch_cutting import busy_cells, grid_patches, load_pair, window_std


def _params(**overrides) -> PatchesParams:
    settings = {"patch_size": 8, "stride": 4, "max_per_pair": None, "min_std": 4.0}
    return PatchesParams(**(settings | overrides))


def _stack(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, height, width), np.uint8)


def test_window_std_matches_numpy_on_an_odd_image():
    image = _stack(19, 23)[0]
    ys, xs = np.arange(0, 19 - 5 + 1, 3), np.arange(0, 23 - 5 + 1, 3)
    expected = [[image[y : y + 5, x : x + 5].std() for x in xs] for y in ys]
    np.testing.assert_allclose(window_std(image, 5, ys, xs), expected, atol=1e-6)


def test_a_window_is_kept_when_either_source_is_busy():
    vis, ir = np.full((16, 16), 90, np.uint8), np.full((16, 16), 30, np.uint8)
    vis[:8, 8:12] = 200  # in the visible only: windows x = 4, 8 of grid rows 0, 1 (y = 0, 4)
    ir[8:, :4] = 250  # in the infrared only: window x = 0 of grid rows 1, 2 (y = 4, 8)
    cells, windows = busy_cells(vis, ir, _params())
    assert windows == 9  # a 3 x 3 grid of 8 x 8 windows, step 4
    assert sorted(map(tuple, cells.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]


def test_a_pair_smaller_than_a_patch_gives_no_patches():
    corners, patches, counts = grid_patches(_stack(7, 30), _params(), np.random.default_rng(0))
    assert corners.shape == (0, 2) and patches.shape == (0, 3, 8, 8)
    assert counts == {"windows": 0, "near_empty": 0, "subsampled": 0}


def test_subsampling_is_seeded_in_grid_order_and_cuts_aligned_windows():
    stack = _stack(21, 27)  # odd: 4 x 5 windows, the last rows and columns left over
    p = _params(max_per_pair=7)
    corners, patches, counts = grid_patches(stack, p, np.random.default_rng(5))
    assert counts == {"windows": 20, "near_empty": 0, "subsampled": 13}
    assert patches.shape == (7, 3, 8, 8) and patches.flags.c_contiguous
    assert corners.dtype == np.int32 and (corners % 4 == 0).all()
    assert corners.tolist() == sorted(corners.tolist())  # grid order, not draw order
    for patch, (y, x) in zip(patches, corners, strict=True):
        assert np.array_equal(patch, stack[:, y : y + 8, x : x + 8])
    again, _, _ = grid_patches(stack, p, np.random.default_rng(5))
    other, _, _ = grid_patches(stack, p, np.random.default_rng(6))
    assert np.array_equal(again, corners) and not np.array_equal(other, corners)


def test_load_pair_stacks_luma_infrared_and_a_binary_mask_and_names_a_size_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (9, 11, 3), np.uint8)).save(tmp_path / "vis.png")
    Image.fromarray(rng.integers(0, 256, (9, 11), np.uint8)).save(tmp_path / "ir.png")
    Image.fromarray(rng.integers(0, 256, (9, 11), np.uint8)).save(tmp_path / "mask.png")
    row = {"pair_id": "toy/1", "vis": "vis.png", "ir": "ir.png", "mask_out": "mask.png"}
    stack = load_pair(tmp_path, row)
    assert stack.shape == (3, 9, 11) and stack.dtype == np.uint8
    assert set(np.unique(stack[2])) == {0, 255}
    Image.fromarray(np.zeros((9, 10), np.uint8)).save(tmp_path / "mask.png")
    with pytest.raises(ImageError, match=r"toy/1: sizes differ") as info:
        load_pair(tmp_path, row)
    assert str(tmp_path / "mask.png") in str(info.value)
