"""The patch file's format, written by the patches stage and read by training: one definition.

``data/patches.h5``: ``patches`` uint8 (N, 3, S, S) with channels :data:`CHANNELS` (visible Y,
infrared, mask 0/255), gzip-compressed in chunks of :data:`CHUNK`; ``pair_id`` (N,) UTF-8
strings; ``yx`` (N, 2) int32 top-left corners in the source image; the patches params as file
attributes (``params`` as JSON, each key on its own, None as -1). Written without timestamps, so
the same patches give a byte-identical file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import InputError

CHANNELS = ("visible_y", "infrared", "mask")
CHUNK = 64  # patches per HDF5 chunk


class PatchWriter:
    """Appends patches to an open HDF5 file; :meth:`close` writes the index and attributes."""

    def __init__(self, h5: h5py.File, size: int, params: dict[str, Any]) -> None:
        self.h5 = h5
        self.params = params
        self.pair_ids: list[str] = []
        self.corners: list[np.ndarray] = []
        shape = (len(CHANNELS), size, size)
        self.data = h5.create_dataset(
            "patches", shape=(0, *shape), maxshape=(None, *shape), dtype=np.uint8,
            chunks=(CHUNK, *shape), compression="gzip", compression_opts=1, track_times=False,
        )  # fmt: skip

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    def append(self, patches: np.ndarray, pair_id: str, yx: np.ndarray) -> None:
        """Add (M, 3, S, S) uint8 patches cut from ``pair_id`` at corners ``yx`` (M, 2)."""
        start = self.count
        self.data.resize(start + len(patches), axis=0)
        self.data[start:] = patches
        self.pair_ids += [pair_id] * len(patches)
        self.corners.append(np.asarray(yx, dtype=np.int32))

    def close(self) -> None:
        """Write ``pair_id``, ``yx`` and the attributes."""
        h5 = self.h5
        h5.create_dataset("pair_id", data=np.array(self.pair_ids, dtype=object),
                          dtype=h5py.string_dtype("utf-8"), track_times=False)  # fmt: skip
        corners = np.concatenate(self.corners) if self.corners else np.zeros((0, 2), np.int32)
        h5.create_dataset("yx", data=corners, track_times=False)
        h5.attrs["channels"] = ",".join(CHANNELS)
        h5.attrs["params"] = json.dumps(self.params, sort_keys=True)
        for key, value in self.params.items():
            h5.attrs[key] = -1 if value is None else value


@contextmanager
def write_patch_file(path: Path, size: int, params: dict[str, Any]) -> Iterator[PatchWriter]:
    """A :class:`PatchWriter` on a new patch file at ``path`` (``size`` x ``size`` patches,
    ``params`` as attributes); the file appears, closed, only if the block ends without error."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w", track_order=False) as h5:
        writer = PatchWriter(h5, size, params)
        yield writer
        writer.close()


@dataclass(frozen=True)
class PatchFile:
    """A patch file's content, read whole and checked."""

    patches: np.ndarray  # uint8 (N, 3, S, S)
    pair_ids: list[str]
    yx: np.ndarray  # int32 (N, 2)
    attrs: dict[str, Any]


def read_patch_file(path: str | Path) -> PatchFile:
    """Read and check a patch file; anything else is an :class:`InputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no patches file; run the patches stage")
    try:
        with h5py.File(path, "r") as h5:
            patches = h5["patches"][...]
            pair_ids = h5["pair_id"].asstr()[...]
            yx = h5["yx"][...]
            attrs = dict(h5.attrs)
    except (OSError, KeyError) as exc:
        raise InputError(f"{path}: not a patches file ({exc})") from exc
    if patches.dtype != np.uint8 or patches.ndim != 4 or patches.shape[1] != len(CHANNELS):
        raise InputError(
            f"{path}: patches must be uint8 (N, {len(CHANNELS)}, S, S), got {patches.shape}"
        )
    if not len(patches) == len(pair_ids) == len(yx):
        raise InputError(f"{path}: patches, pair_id and yx lengths differ")
    return PatchFile(patches, pair_ids.tolist(), yx, attrs)
