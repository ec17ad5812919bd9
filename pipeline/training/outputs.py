"""What a finished training leaves in the project: ``artifacts/model.pt`` (the fusion model)
and ``reports/train_loss.csv`` (the loss history, one column per objective term)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from models.state import fusion_state
from pipeline.core.atomic import atomic_path

HISTORY_KEYS = ("step", "epoch", "phase")


def history_columns(terms: Sequence[str]) -> tuple[str, ...]:
    """The loss history's columns: step, epoch, phase, then the objective's terms."""
    return (*HISTORY_KEYS, *terms)


def write_loss_csv(path: Path, history: Sequence[Sequence[float]], terms: Sequence[str]) -> Path:
    """One row per step: step, epoch and phase as integers, each term to 6 digits."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(history_columns(terms))
        for step, epoch, phase, *values in history:
            writer.writerow([int(step), int(epoch), int(phase), *(f"{v:.6g}" for v in values)])
    return path


def write_model_file(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """``model.pt``: the fusion state dict (on the CPU; without the VGG-19 layers only the
    training loss uses, :func:`models.state.fusion_state`) and ``meta`` (vgg_weights,
    precision, params), written atomically; loaded with ``weights_only=True``."""
    state = {k: v.detach().cpu() for k, v in fusion_state(model.state_dict()).items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)
    return path
