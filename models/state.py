"""A CoCoNet from a state dict: the checks and the build every model loader shares.

The state dict holds the VGG tensors too, so no VGG download is needed: the network is built on
the meta device and the tensors are assigned to it.
"""

from __future__ import annotations

import torch

from models.coconet import CoCoNet
from models.errors import CoconetError


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


def coconet_from_state(state: dict[str, torch.Tensor], vgg_weights: str, source: str) -> CoCoNet:
    """An eval-mode CoCoNet holding exactly ``state`` (finite, every key, nothing more), its
    VGG frozen and labelled ``vgg_weights``; ``source`` names the file in errors."""
    check_finite(state, source)
    with torch.device("meta"):
        model = CoCoNet(vgg_weights="random")
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
    return model.eval()
