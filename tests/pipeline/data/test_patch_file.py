"""The patch file format: what is written is read back, the file appears only whole, the same
patches give the same bytes, and a file that is not a patches file is an error naming it."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pipeline.core.errors import InputError
from pipeline.data.patch_file import CHANNELS, read_patch_file, write_patch_file
from tests.helpers.patches import write_patches


def _patches(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, len(CHANNELS), size, size), np.uint8)


def test_round_trip_keeps_patches_ids_corners_and_params(tmp_path):
    path = tmp_path / "patches.h5"
    first, second = _patches(3, 13), _patches(2, 13, seed=1)  # an odd size
    params = {"patch_size": 13, "stride": 7, "max_per_pair": None, "seed": 0}
    with write_patch_file(path, 13, params) as writer:
        writer.append(first, "tno/1", [[0, 0], [0, 7], [7, 0]])
        writer.append(second, "roadscene/Ü2", [[14, 7], [7, 7]])
        assert writer.count == 5
    content = read_patch_file(path)
    assert np.array_equal(content.patches, np.concatenate([first, second]))
    assert content.pair_ids == ["tno/1"] * 3 + ["roadscene/Ü2"] * 2
    assert content.yx.dtype == np.int32 and content.yx.tolist()[3:] == [[14, 7], [7, 7]]
    assert json.loads(content.attrs["params"]) == params
    assert content.attrs["stride"] == 7 and content.attrs["max_per_pair"] == -1  # None as -1
    assert content.attrs["channels"] == ",".join(CHANNELS)


def test_a_file_without_patches_reads_as_empty(tmp_path):
    with write_patch_file(tmp_path / "p.h5", 16, {}):
        pass
    content = read_patch_file(tmp_path / "p.h5")
    assert content.patches.shape == (0, 3, 16, 16) and content.yx.shape == (0, 2)
    assert content.pair_ids == []


def test_an_error_while_writing_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = write_patches(tmp_path / "patches.h5")
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="cut failed"), write_patch_file(path, 16, {}) as w:
        w.append(_patches(2, 16), "x/1", np.zeros((2, 2), np.int32))
        raise RuntimeError("cut failed")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["patches.h5"]


def test_same_patches_give_byte_identical_files(tmp_path):
    a = write_patches(tmp_path / "a.h5", seed=3)
    b = write_patches(tmp_path / "b.h5", seed=3)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != write_patches(tmp_path / "c.h5", seed=4).read_bytes()


def test_foreign_and_malformed_files_are_errors_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"none\.h5: no patches file"):
        read_patch_file(tmp_path / "none.h5")
    text = tmp_path / "text.h5"
    text.write_text("not HDF5")
    with pytest.raises(InputError, match=r"text\.h5: not a patches file"):
        read_patch_file(text)
    grey = tmp_path / "grey.h5"  # one channel, not three
    with h5py.File(grey, "w") as h5:
        h5["patches"] = np.zeros((2, 1, 8, 8), np.uint8)
        h5["pair_id"] = np.array(["a", "b"], dtype=object).astype(h5py.string_dtype())
        h5["yx"] = np.zeros((2, 2), np.int32)
    with pytest.raises(InputError, match=r"grey\.h5: patches must be uint8 \(N, 3, S, S\)"):
        read_patch_file(grey)
    short = tmp_path / "short.h5"  # an index shorter than the patches
    with h5py.File(short, "w") as h5:
        h5["patches"] = np.zeros((2, 3, 8, 8), np.uint8)
        h5["pair_id"] = np.array(["a"], dtype=object).astype(h5py.string_dtype())
        h5["yx"] = np.zeros((2, 2), np.int32)
    with pytest.raises(InputError, match=r"short\.h5: patches, pair_id and yx lengths differ"):
        read_patch_file(short)
