"""Loading segment-anything: a ``SamPredictor`` from a checkpoint (weights only, verified by the
download stage's hash), on a placed device. Its own module because it imports torch and
segment-anything, which the classical saliency path does not need."""

from __future__ import annotations

from pathlib import Path

import torch
from segment_anything import SamPredictor, sam_model_registry


def load_sam_predictor(model_type: str, checkpoint: Path, device: torch.device) -> SamPredictor:
    """A ``SamPredictor`` for a segment-anything checkpoint, on ``device``; the file is read
    with ``weights_only=True`` (never unpickled)."""
    sam = sam_model_registry[model_type](checkpoint=None)
    sam.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    sam.to(device).eval()
    return SamPredictor(sam)
