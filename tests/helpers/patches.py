"""A synthetic ``patches.h5`` written with the patch file's own writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.data.patch_file import write_patch_file

PATCH = 16  # the smallest size the contrastive loss's VGG taps accept
N_PATCHES = 8


def write_patches(path: Path, n: int = N_PATCHES, size: int = PATCH, seed: int = 0) -> Path:
    """A patches file of ``n`` textured ``size`` x ``size`` patches; every other one has a hot
    masked blob in the infrared channel."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    patches = np.zeros((n, 3, size, size), np.uint8)
    for k in range(n):
        vis = 128 + 60 * np.sin(xx / (2 + k)) + rng.normal(0, 10, (size, size))
        ir = 40 + rng.normal(0, 5, (size, size))
        if k % 2 == 0:
            blob = (yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 5) ** 2
            ir[blob] = 230
            patches[k, 2] = blob * 255
        patches[k, 0], patches[k, 1] = (np.clip(a, 0, 255) for a in (vis, ir))
    with write_patch_file(path, size, {"patch_size": size}) as writer:
        for k in range(n):
            writer.append(patches[k : k + 1], f"synth/p{k}", np.zeros((1, 2), np.int32))
    return path
