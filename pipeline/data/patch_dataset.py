"""Training patches from ``data/patches.h5`` as a torch ``Dataset`` held in memory."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.core.errors import InputError

CHANNELS = ("visible_y", "infrared", "mask")


class PatchDataset(Dataset):
    """All patches of a patches file, read once into memory (no file access per item).

    Item ``i`` is a float32 tensor (3, S, S) on the 0..1 scale with channels
    [visible Y, infrared, mask]; ``pair_ids[i]`` names the pair it was cut from and
    ``yx[i]`` its top-left corner there.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no patches file; run the patches stage")
        try:
            with h5py.File(path, "r") as h5:
                patches = h5["patches"][...]
                pair_ids = h5["pair_id"].asstr()[...]
                yx = h5["yx"][...]
                self.attrs = dict(h5.attrs)
        except (OSError, KeyError) as exc:
            raise InputError(f"{path}: not a patches file ({exc})") from exc
        if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[1] != len(CHANNELS):
            raise InputError(f"{path}: patches must be uint8 (N, 3, S, S), got {patches.shape}")
        if not len(patches) == len(pair_ids) == len(yx):
            raise InputError(f"{path}: patches, pair_id and yx lengths differ")
        self.path = path
        self.patches = torch.from_numpy(patches)
        self.pair_ids: list[str] = pair_ids.tolist()
        self.yx = yx

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[-1])

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patches[index].to(torch.float32).div_(255.0)
