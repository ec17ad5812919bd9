"""Per-image output contrast: the fused image mapped affinely to a set mean and spread.

The authors' released TNO fusions all have a mean near 108 and a standard deviation near 65
grey levels whatever their sources (each is ``a·ir + b·vis + c`` with ``a + b`` about 2): their
test script runs the network in train mode, so every BatchNorm normalises each image by its own
statistics. :func:`normalise_contrast` does that normalisation explicitly, once, on the whole
fused image (after tiling, so tiles change nothing); a model carries its setting
(``CoCoNet.output_contrast``, from ``model.output_mean`` / ``model.output_sd``), and ``None``
(the paper schedule) leaves the network's output as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

_MIN_SPREAD = 1e-6  # a flat image stays flat (at the mean) instead of amplifying rounding noise


class OutputContrast(NamedTuple):
    """Target mean and standard deviation of a fused image, on the 0..1 scale."""

    mean: float
    sd: float


def output_contrast(mean: float | None, sd: float | None) -> OutputContrast | None:
    """The setting from ``model.output_mean`` / ``model.output_sd`` (None when both are null)."""
    return None if mean is None or sd is None else OutputContrast(float(mean), float(sd))


def check_output_contrast(value: object, source: str) -> OutputContrast | None:
    """``value`` (a model file's ``output_contrast`` entry) as an :class:`OutputContrast`, or
    None; anything else is a ValueError naming ``source``."""
    if value is None:
        return None
    if isinstance(value, dict) and set(value) == {"mean", "sd"}:
        mean, sd = value["mean"], value["sd"]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (mean, sd)) and (
            0.0 <= mean <= 1.0 and 0.0 < sd <= 1.0
        ):
            return OutputContrast(float(mean), float(sd))
    raise ValueError(
        f"{source}: output_contrast must be null or {{mean: 0..1, sd: (0, 1]}}, got {value!r}"
    )


def contrast_entry(model: object) -> dict[str, float] | None:
    """A model's ``output_contrast`` as a model file stores it (``{mean, sd}`` or None)."""
    target = getattr(model, "output_contrast", None)
    return None if target is None else target._asdict()


def normalise_contrast(fused: torch.Tensor, target: OutputContrast) -> torch.Tensor:
    """Each image of ``fused`` (B, 1, H, W; 0..1) shifted and scaled to ``target``'s mean and
    standard deviation (over its pixels), clamped to 0..1. The statistics accumulate in float64;
    the image stays in its dtype, so a large image needs about two extra copies of itself, not
    float64 ones (the memory budget of tiled fusion counts the image at a few bytes per pixel)."""
    dims = (-2, -1)
    mean = fused.mean(dim=dims, keepdim=True, dtype=torch.float64)
    out = fused - mean.to(fused.dtype)
    sd = out.square().mean(dim=dims, keepdim=True, dtype=torch.float64).sqrt()
    scale = torch.where(sd > _MIN_SPREAD, target.sd / sd.clamp_min(_MIN_SPREAD), 0.0)
    return out.mul_(scale.to(fused.dtype)).add_(target.mean).clamp_(0, 1)
