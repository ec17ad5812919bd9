"""Loading segment-anything: a ``SamPredictor`` from a checkpoint (weights only, verified by the
download stage's hash), on a placed device. Its own module because it imports torch and
segment-anything, which the classical saliency path does not need."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything import SamPredictor, sam_model_registry

from models.weights_file import load_weights_file


def load_sam_predictor(model_type: str, checkpoint: Path, device: torch.device) -> SamPredictor:
    """A ``SamPredictor`` for a segment-anything checkpoint, on ``device``; the file is read
    by :func:`models.weights_file.load_weights_file` (tensors only, sizes checked)."""
    sam = sam_model_registry[model_type](checkpoint=None)
    sam.load_state_dict(load_weights_file(checkpoint))
    sam.to(device).eval()
    return SamPredictor(sam)
