"""Training checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint holds the model and optimiser state, the epoch and phase reached, the loss
history, and the RNG states of torch (CPU and CUDA), numpy and Python's ``random`` stored as
tensors and plain values, so loading never unpickles arbitrary objects. It also holds a
fingerprint (train+model params digest, the patches file hash, the objective's term names and
a digest of the code that shapes the weights): a checkpoint made with other params, data, loss
terms or training code is ignored, so a changed loss or network never resumes old weights.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pooch
import torch

from models.weights_file import check_weights_file
from pipeline.core.atomic import atomic_path
from pipeline.core.params import PROJECT_ROOT, Params

CHECKPOINT_PATTERN = re.compile(r"epoch_(\d+)\.pt$")
TRAINING_CODE = ("models", "pipeline/training", "pipeline/data")  # what shapes the weights


def params_digest(params: Params) -> str:
    """sha256 of the train and model sections (what determines the trained weights)."""
    sections = params.model_dump(mode="json", include={"train", "model"})
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes (DVC's hash for a single file)."""
    return pooch.file_hash(str(path), alg="md5")


def code_digest(root: Path = PROJECT_ROOT) -> str:
    """sha256 of the Python sources under ``TRAINING_CODE`` (paths and bytes, sorted)."""
    digest = hashlib.sha256()
    for folder in TRAINING_CODE:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(params: Params, patches_path: str | Path, terms: Sequence[str]) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the params, the patches, the objective's
    terms (the loss history's columns) and the training code."""
    return {
        "params": params_digest(params),
        "patches_md5": file_md5(patches_path),
        "terms": ",".join(terms),
        "code": code_digest(),
    }


def rng_state() -> dict[str, Any]:
    """The process's RNG states (CPU, its CUDA device, numpy, Python) as tensors and plain
    values."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["kind"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["gauss"],
        )
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(int(v) for v in pyst["internal"]), pyst["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def checkpoint_path(folder: str | Path, epoch: int) -> Path:
    """``folder/epoch_<NNN>.pt`` for a checkpoint taken after ``epoch`` epochs."""
    return Path(folder) / f"epoch_{epoch:03d}.pt"


def save_checkpoint(folder: str | Path, epoch: int, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically as the checkpoint after ``epoch`` epochs, keeping the
    previous one until the new one is complete, then removing the older ones."""
    target = checkpoint_path(folder, epoch)
    with atomic_path(target) as tmp:
        torch.save(payload, tmp)
    for old in Path(folder).glob("epoch_*.pt"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


def mark_tracking_lost(folder: str | Path, lost: dict[str, Any] | None) -> Path | None:
    """Record in the latest checkpoint that its MLflow run lost the store (``lost``), so that
    the next training run finishes the run from it instead of starting fresh."""
    path = latest_checkpoint(folder)
    if path is not None:
        state = load_checkpoint(path)
        state["tracking_lost"] = lost
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    return path


def latest_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint with the highest epoch in ``folder``, if any."""
    found = [
        (int(m.group(1)), p)
        for p in Path(folder).glob("epoch_*.pt")
        if (m := CHECKPOINT_PATTERN.search(p.name))
    ]
    return max(found)[1] if found else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling arbitrary objects."""
    check_weights_file(Path(path))
    return torch.load(path, map_location=map_location, weights_only=True)


def find_resumable(
    folder: str | Path, expected: dict[str, str]
) -> tuple[dict[str, Any] | None, str]:
    """The latest checkpoint if its fingerprint matches ``expected``, and a message saying
    what was decided (resume, or start fresh and why)."""
    path = latest_checkpoint(folder)
    if path is None:
        return None, "no checkpoint: starting fresh"
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # a torn or foreign file is not fatal: train from scratch
        return None, f"{path}: unreadable checkpoint ({exc}); starting fresh"
    found = state.get("fingerprint", {})
    if found != expected:
        changed = sorted(k for k in expected if found.get(k) != expected[k])
        return None, f"{path}: made with different {', '.join(changed)}; starting fresh"
    return state, f"resuming from {path} (epoch {state['epoch']}, phase {state['phase']})"
