"""Training patches from ``data/patches.h5`` as a torch ``Dataset`` held in memory."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from pipeline.data.patch_file import read_patch_file


class PatchDataset(Dataset):
    """All patches of a patches file (:mod:`pipeline.data.patch_file`), read once into memory
    (no file access per item).

    Item ``i`` is a float32 tensor (3, S, S) on the 0..1 scale with channels
    [visible Y, infrared, mask]; ``pair_ids[i]`` names the pair it was cut from and
    ``yx[i]`` its top-left corner there.
    """

    def __init__(self, path: str | Path):
        content = read_patch_file(path)
        self.path = Path(path)
        self.patches = torch.from_numpy(content.patches)
        self.pair_ids: list[str] = content.pair_ids
        self.yx = content.yx
        self.attrs = content.attrs

    @property
    def patch_size(self) -> int:
        return int(self.patches.shape[-1])

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.patches[index].to(torch.float32).div_(255.0)
