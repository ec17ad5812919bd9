"""The patches stage (grid, filters, seeded augmentation, byte-identical HDF5) and PatchDataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.core.imageio import read_image, to_grey, to_uint8
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.data.patch_dataset import PatchDataset
from pipeline.stages import patches as stage

SIZES = {"p1": (40, 56), "p2": (33, 48), "small": (10, 12)}


def make_layout(root: Path) -> dict[str, np.ndarray]:
    """data/raw + data/masks for three training pairs (one too small) and one test pair."""
    rng = np.random.default_rng(1)
    rows, mask_rows, stacks = [], [], {}
    for pair, (h, w) in {**SIZES, "t1": (40, 40)}.items():
        vis = rng.integers(0, 256, (h, w, 3), np.uint8)
        ir = rng.integers(0, 256, (h, w), np.uint8)
        if pair == "p2":  # a flat band: near-empty windows there
            vis[:, :16] = 90
            ir[:, :16] = 30
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : h // 2, w // 3 : w // 2] = 255
        rel = {r: f"data/raw/toy/{r}/{pair}.png" for r in ("ir", "vis", "mask")}
        for role, image in (("ir", ir), ("vis", vis)):
            (root / rel[role]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / rel[role])
        split = "test" if pair == "t1" else "train"
        rows.append({"pair_id": f"toy/{pair}", "dataset": "toy", "pair": pair, "split": split,
                     "ir": rel["ir"], "vis": rel["vis"], "mask": ""})  # fmt: skip
        if split == "train":
            out = root / f"data/masks/toy/{pair}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(out)
            mask_rows.append({"pair_id": f"toy/{pair}", "mask": f"data/masks/toy/{pair}.png",
                              "method": "ir_saliency"})  # fmt: skip
            y = to_uint8(to_grey(read_image(root / rel["vis"])))
            stacks[f"toy/{pair}"] = np.stack([y, ir, mask])
    pd.DataFrame(rows).to_csv(root / "data/raw/index.csv", index=False)
    pd.DataFrame(mask_rows).to_csv(root / "data/masks/index.csv", index=False)
    return stacks


def params(**patches) -> Params:
    settings = {"patch_size": 16, "stride": 8, "max_per_pair": None, "min_std": 4.0, "seed": 0,
                "hflip_p": 0.5, "vflip_p": 0.5, "rotate90_p": 0.5} | patches  # fmt: skip
    return Params.model_validate({"patches": settings})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_runs_are_byte_identical_and_the_seed_matters(tmp_path):
    digests = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_layout(tmp_path / name)
        stage.run(params(max_per_pair=5, seed=seed), ProjectPaths(tmp_path / name))
        digests.append(sha256(tmp_path / name / "data/patches.h5"))
    assert digests[0] == digests[1]
    assert digests[2] != digests[0]


def test_patches_are_aligned_grid_windows_without_augmentation(tmp_path):
    stacks = make_layout(tmp_path)
    summary = stage.run(params(hflip_p=0, vflip_p=0, rotate90_p=0), ProjectPaths(tmp_path))
    with h5py.File(tmp_path / "data/patches.h5") as h5:
        data, ids, yx = h5["patches"][...], h5["pair_id"].asstr()[...], h5["yx"][...]
        assert h5.attrs["channels"] == "visible_y,infrared,mask" and h5.attrs["patch_size"] == 16
    assert data.dtype == np.uint8 and data.shape[1:] == (3, 16, 16) and yx.dtype == np.int32
    assert set(ids) == {"toy/p1", "toy/p2"}  # the test pair and the too-small pair are left out
    for patch, pair_id, (y, x) in zip(data, ids, yx, strict=True):
        assert y % 8 == 0 and x % 8 == 0
        assert np.array_equal(patch, stacks[pair_id][:, y : y + 16, x : x + 16])
    assert set(np.unique(data[:, 2])) <= {0, 255}
    # p1: 4 x 6 windows, all busy; p2: 3 x 5 windows, the first column flat (x = 0)
    assert summary["grid_windows"] == 24 + 15 and summary["near_empty_dropped"] == 3
    assert summary["patches"] == len(data) == 24 + 12 and summary["pairs_too_small"] == 1
    assert not any(i == "toy/p2" and x == 0 for i, (_, x) in zip(ids, yx, strict=True))
    report = json.loads((tmp_path / "reports/patches.json").read_text())
    assert report == summary and report["per_dataset"] == {"toy": 36}
    expected_mean = data.reshape(len(data), 3, -1).mean(axis=(0, 2))
    assert list(report["channel_mean"].values()) == pytest.approx(expected_mean, abs=1e-3)


def test_augmentation_moves_the_three_channels_together(tmp_path):
    stacks = make_layout(tmp_path)
    stage.run(params(hflip_p=1.0, vflip_p=0, rotate90_p=0), ProjectPaths(tmp_path))
    with h5py.File(tmp_path / "data/patches.h5") as h5:
        data, ids, yx = h5["patches"][...], h5["pair_id"].asstr()[...], h5["yx"][...]
    for patch, pair_id, (y, x) in zip(data, ids, yx, strict=True):
        assert np.array_equal(patch, stacks[pair_id][:, y : y + 16, x : x + 16][:, :, ::-1])
    stage.run(params(rotate90_p=1.0, hflip_p=0, vflip_p=0, max_per_pair=3), ProjectPaths(tmp_path))
    with h5py.File(tmp_path / "data/patches.h5") as h5:
        data, ids, yx = h5["patches"][...], h5["pair_id"].asstr()[...], h5["yx"][...]
    assert len(data) == 6 and (ids == "toy/p1").sum() == 3
    turns = []  # RandomRotate90 turns by k * 90 degrees, k in 0..3, all channels alike
    for patch, pair_id, (y, x) in zip(data, ids, yx, strict=True):
        source = stacks[pair_id][:, y : y + 16, x : x + 16]
        turns += [k for k in range(4) if np.array_equal(patch, np.rot90(source, k, axes=(1, 2)))]
    assert len(turns) == 6 and set(turns) != {0}


def test_missing_masks_stage_output_is_a_clear_error(tmp_path):
    make_layout(tmp_path)
    (tmp_path / "data/masks/index.csv").unlink()
    with pytest.raises(FileNotFoundError, match="masks stage"):
        stage.run(params(), ProjectPaths(tmp_path))
    assert not (tmp_path / "data/patches.h5").exists()


def test_patch_dataset_loads_once_and_serves_float_tensors(tmp_path, monkeypatch):
    make_layout(tmp_path)
    stage.run(params(), ProjectPaths(tmp_path))
    with h5py.File(tmp_path / "data/patches.h5") as h5:
        raw = h5["patches"][...]
    dataset = PatchDataset(tmp_path / "data/patches.h5")

    def no_file_access(*args, **kwargs):
        raise AssertionError("PatchDataset opened the file after construction")

    monkeypatch.setattr(h5py, "File", no_file_access)
    assert len(dataset) == len(raw) == len(dataset.pair_ids) and dataset.patch_size == 16
    item = dataset[3]
    assert item.dtype == torch.float32 and item.shape == (3, 16, 16)
    assert torch.equal(item, torch.from_numpy(raw[3]).float() / 255)
    assert item.min() >= 0.0 and item.max() <= 1.0
    assert set(dataset.pair_ids) == {"toy/p1", "toy/p2"}
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch.shape == (4, 3, 16, 16)


def test_patch_dataset_rejects_missing_or_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="patches stage"):
        PatchDataset(tmp_path / "none.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not a patches file"):
        PatchDataset(tmp_path / "other.h5")


def test_only_train_split_pairs_are_cut_so_tno_masked_27_never_is(tmp_path):
    """tno_masked/27 shows tno40 test pair 15's scene from the same viewpoint: the catalogue
    marks it unused, and neither it nor a held-out (val/test) pair gets a patch."""
    from pipeline.catalogue import load_dataset

    masked, roadscene = load_dataset("tno_masked"), load_dataset("roadscene")
    assert masked.split_of("27") == "unused" and "tno40 test pair 15" in masked.reasons["27"]
    held_out = {s: next(p for p in roadscene.pairs() if roadscene.split_of(p) == s)
                for s in ("val", "test")}  # fmt: skip
    make_layout(tmp_path)
    index = pd.read_csv(tmp_path / "data/raw/index.csv")
    masks = pd.read_csv(tmp_path / "data/masks/index.csv")
    rename = {"toy/p1": ("tno_masked", "27", masked.split_of("27")),
              "toy/p2": ("roadscene", held_out["val"], "val"),
              "toy/small": ("roadscene", held_out["test"], "test")}  # fmt: skip
    for old, (dataset, pair, split) in rename.items():
        at = index["pair_id"] == old
        index.loc[at, ["pair_id", "dataset", "pair", "split"]] = [f"{dataset}/{pair}", dataset,
                                                                   pair, split]  # fmt: skip
        masks.loc[masks["pair_id"] == old, "pair_id"] = f"{dataset}/{pair}"
    index = pd.concat(
        [
            index,
            index.iloc[[0]].assign(
                pair_id="tno_masked/26", pair="26", dataset="tno_masked", split="train"
            ),
        ]
    )
    masks = pd.concat([masks, masks.iloc[[0]].assign(pair_id="tno_masked/26")])
    index.to_csv(tmp_path / "data/raw/index.csv", index=False)
    masks.to_csv(tmp_path / "data/masks/index.csv", index=False)
    pairs = [row["pair_id"] for row in stage.training_pairs(ProjectPaths(tmp_path))]
    assert pairs == ["tno_masked/26"]
    stage.run(params(), ProjectPaths(tmp_path))
    with h5py.File(tmp_path / "data/patches.h5") as h5:
        names = {str(n, "utf-8") if isinstance(n, bytes) else str(n) for n in h5["pair_id"][:]}
    assert names == {"tno_masked/26"}
