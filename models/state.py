"""A CoCoNet from a state dict: the checks and the build every model loader shares.

The state dict holds the VGG tensors too, so no VGG download is needed: the network is built on
the meta device (no random initialisation) and the tensors are assigned to it. A fusion model
holds only the VGG-19 layers fusion runs (:func:`fusion_state`); a file written before that,
with the whole VGG-19, still loads: its conv4_1 .. conv5_4 tensors are dropped.
"""

from __future__ import annotations

import torch

from models.coconet import CoCoNet
from models.contrast import check_output_contrast
from models.errors import CoconetError
from models.vgg import SIDE_DEPTH

VGG_PREFIX = "vgg.features."


class StateDictError(CoconetError, ValueError):
    """A state dict that is not usable CoCoNet weights."""


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or infinity (a diverged training), naming the first tensor.

    One fused norm per tensor screens them all (milliseconds, where ``isfinite`` on each
    takes over a second on a CPU); only a non-finite norm is looked at element by element.
    """
    floats = {name: t for name, t in state.items() if t.is_floating_point()}
    if not floats:
        return
    norms = torch._foreach_norm(list(floats.values()))
    if bool(torch.isfinite(torch.stack([n.float() for n in norms])).all()):
        return
    for name, tensor in floats.items():
        if not bool(torch.isfinite(tensor).all()):  # not a finite norm that overflowed
            raise StateDictError(
                f"{source}: non-finite weights (NaN or inf) in {name}; the training that wrote "
                "it diverged, so it would fuse to a blank image (retrain, e.g. with a lower "
                "train.lr)"
            )


def is_contrast_only(key: str) -> bool:
    """Whether ``key`` is a VGG-19 tensor that only the contrastive loss uses (conv4_1 ..)."""
    if not key.startswith(VGG_PREFIX):
        return False
    index = key.removeprefix(VGG_PREFIX).split(".")[0]
    return index.isdigit() and int(index) >= SIDE_DEPTH


def fusion_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the VGG-19 tensors fusion never uses: what a fusion model file holds."""
    return {key: value for key, value in state.items() if not is_contrast_only(key)}


def coconet_from_state(
    state: dict[str, torch.Tensor],
    vgg_weights: str,
    source: str,
    output_contrast: object = None,
) -> CoCoNet:
    """An eval-mode fusion-only CoCoNet holding exactly ``state`` (finite, every key, nothing
    more; the VGG-19 layers only the contrastive loss uses are dropped, so full and lean files
    load alike), its VGG frozen and labelled ``vgg_weights``, its output contrast the file's
    ``output_contrast`` entry (checked; None for files without one); ``source`` names the file
    in errors."""
    try:
        contrast = check_output_contrast(output_contrast, source)
    except ValueError as exc:
        raise StateDictError(str(exc)) from exc
    state = fusion_state(state)
    check_finite(state, source)
    with torch.device("meta"):
        model = CoCoNet(vgg_weights="random", fusion_only=True)
    expected = set(model.state_dict())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        raise StateDictError(
            f"{source}: weights do not fit CoCoNet ({len(missing)} missing, e.g. {missing[:2]}; "
            f"{len(extra)} unexpected, e.g. {extra[:2]})"
        )
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise StateDictError(f"{source}: weights do not fit CoCoNet ({detail})") from exc
    for param in model.vgg.parameters():
        param.requires_grad_(False)
    model.vgg_weights = model.vgg.weights = vgg_weights
    model.output_contrast = contrast
    return model.eval()
