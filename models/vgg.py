"""Frozen one-channel VGG-19 shared by CoCoNet's side encoder and its contrastive loss.

Weights: ``"imagenet"`` (torchvision's ``VGG19_Weights.IMAGENET1K_V1``, cached in
``$TORCH_HOME/hub/checkpoints``), ``"random"`` (explicit choice for offline runs) or a path to a
local ``.pth`` state dict (a torchvision VGG-19 state dict, or its ``features`` part). The RGB first
convolution is adapted to one channel with the BT.601 luminance weights 0.299/0.587/0.114, as the
official CoCoNet code does. There is never a silent fallback from ImageNet to random weights.

Fusion needs only the layers up to relu3_4 (``SIDE_DEPTH``): a ``fusion_only`` stack stops
there (2,324,416 of the 20,023,232 parameters). The layers are built here, without torchvision:
importing it pulls in ``torch._dynamo`` and sympy (about 2 s), so it is imported only to fetch
ImageNet weights.
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pooch
import torch
from torch import nn

from models.errors import CoconetError
from models.luma import LUMA_WEIGHTS
from models.weights_file import WeightsFileError, load_weights_file

VGG19_FILE = (
    "vgg19-dcbb9e9d.pth"  # torchvision's file name; the part after "-" is the sha256 prefix
)
VGG19_SHA256_PREFIX = "dcbb9e9d"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"  # torchvision's IMAGENET1K_V1
# VGG-19 ("configuration E"): output channels of each 3x3 conv (+ ReLU), "M" a 2x2 max-pool.
VGG19_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M")
VGG19_LAYOUT += (512, 512, 512, 512, "M", 512, 512, 512, 512, "M")

# Layer indices in torchvision's ``vgg19().features`` (conv, relu pairs; "M" = max-pool).
_SIDE_SLICES = ((0, 2), (2, 4), (4, 9), (9, 18))  # relu1_1 | pool, conv1_2 | relu2_2 | relu3_4
_CONTRAST_SLICES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # relu1_1 .. relu5_1
SIDE_DEPTH = _SIDE_SLICES[-1][1]  # 18: conv1_1 .. relu3_4, all that fusion runs


class VGGWeightsError(CoconetError, RuntimeError):
    """The requested VGG-19 weights cannot be loaded."""


def vgg19_cache_file() -> Path:
    """Where torchvision keeps the ImageNet VGG-19 file: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def check_vgg19_hash(path: str | Path) -> None:
    """Raise unless ``path``'s sha256 starts with the known prefix (as torchvision checks it)."""
    digest = pooch.file_hash(str(path), alg="sha256")
    if not digest.startswith(VGG19_SHA256_PREFIX):
        raise VGGWeightsError(
            f"{path}: sha256 {digest[:16]}… does not start with {VGG19_SHA256_PREFIX}; "
            "the file is corrupt or not torchvision's VGG-19 ImageNet weights"
        )


def luminance_first_conv(weight: torch.Tensor) -> torch.Tensor:
    """(64, 3, 3, 3) RGB kernels -> (64, 1, 3, 3) grey kernels: 0.299 R + 0.587 G + 0.114 B."""
    luma = torch.tensor(LUMA_WEIGHTS, dtype=weight.dtype, device=weight.device)
    return (weight * luma.view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG19_Weights  # only here: see the module docstring

    cached = vgg19_cache_file()
    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except URLError as exc:
        raise VGGWeightsError(
            f"VGG-19 ImageNet weights are not available: {VGG19_URL} cannot be downloaded "
            f"({exc.reason}) and there is no cached copy at {cached}. Either set model.vgg_weights "
            "in params.yaml to a local VGG-19 .pth file or to 'random', or run the download "
            f"stage (download.vgg19: imagenet) / put {VGG19_FILE} into $TORCH_HOME/hub/checkpoints."
        ) from exc
    except RuntimeError as exc:  # torch.hub's hash check, or an unreadable cached file
        raise VGGWeightsError(
            f"VGG-19 ImageNet weights at {cached} are unusable ({exc}); delete the file and run "
            "the download stage again, or set model.vgg_weights to a local file or 'random'."
        ) from exc


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise VGGWeightsError(
            f"{path}: no such VGG-19 weights file (model.vgg_weights must be 'imagenet', "
            "'random' or the path to a .pth state dict)"
        )
    if path.name == VGG19_FILE:
        check_vgg19_hash(path)
    try:
        state = load_weights_file(path)
    except WeightsFileError as exc:
        raise VGGWeightsError(str(exc)) from exc
    if not isinstance(state, dict):
        raise VGGWeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _features_only(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Keep the ``features`` tensors (prefix stripped), adapting an RGB first conv to grey."""
    prefixed = {
        k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")
    }
    features = prefixed or {k: v for k, v in state.items() if k.split(".")[0].isdigit()}
    if "0.weight" not in features:
        raise VGGWeightsError(f"{source}: no VGG-19 'features' tensors found")
    if features["0.weight"].shape[1] == 3:
        features["0.weight"] = luminance_first_conv(features["0.weight"])
    return features


def vgg19_layers(depth: int | None = None) -> nn.Sequential:
    """The first ``depth`` layers (all 37 when None) of VGG-19 ``features``, torchvision's layer
    order and indices, with a one-channel first convolution; default-initialised."""
    layers: list[nn.Module] = []
    channels = 1
    for entry in VGG19_LAYOUT:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, entry, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = entry
    return nn.Sequential(*layers[:depth])


def build_vgg19_features(weights: str = "imagenet", depth: int | None = None) -> nn.Sequential:
    """VGG-19 ``features`` (16 convs, 37 layers; the first ``depth`` layers when given),
    one-channel first conv, frozen, eval mode. Built on the meta device (to be assigned
    loaded weights), ``random`` draws nothing: meta tensors hold no values, and drawing normals
    there would import ``torch._dynamo`` and sympy (about 2 s)."""
    features = vgg19_layers(depth)
    if weights == "random":
        if not features[0].weight.is_meta:
            for conv in (m for m in features.modules() if isinstance(m, nn.Conv2d)):
                # torchvision's own VGG initialisation
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(conv.bias)
    else:
        if weights == "imagenet":
            state, source = _imagenet_state_dict(), VGG19_URL
        else:
            state, source = _file_state_dict(Path(weights)), weights
        try:
            kept = len(features)
            layers = _features_only(state, source)
            features.load_state_dict(
                {k: v for k, v in layers.items() if int(k.split(".")[0]) < kept}
            )
        except RuntimeError as exc:
            raise VGGWeightsError(f"{source}: not VGG-19 weights ({exc})") from exc
    for param in features.parameters():
        param.requires_grad_(False)
    return features.eval()


class VGG19Features(nn.Module):
    """The frozen one-channel VGG-19 with the two sets of taps CoCoNet uses.

    ``side_taps`` (the side encoder, as in the official ``Vgg19_Unet``): relu1_1 max-pooled once and
    passed through conv1_2 (64 channels, H/2), relu2_2 (128, H/4) and relu3_4 (256, H/8).
    ``contrast_taps`` (the contrastive loss): relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
    Layers after relu5_1 are kept so the state dict is the whole ``features`` stack. With
    ``fusion_only`` the stack ends at relu3_4 (``SIDE_DEPTH``): side taps only, no contrast taps.
    """

    def __init__(self, weights: str = "imagenet", fusion_only: bool = False) -> None:
        super().__init__()
        self.weights = weights
        self.features = build_vgg19_features(weights, SIDE_DEPTH if fusion_only else None)
        self._pool = nn.MaxPool2d(2, 2)

    def train(self, mode: bool = True) -> VGG19Features:
        """Always stay in eval mode (frozen module)."""
        return super().train(False)

    def _run(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for index in range(start, stop):
            x = self.features[index](x)
        return x

    def side_taps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B,1,H,W) on the network's [-1, 1] scale -> features at H/2, H/4, H/8."""
        x = self._pool(self._run(x, *_SIDE_SLICES[0]))
        half = self._run(x, *_SIDE_SLICES[1])
        quarter = self._run(half, *_SIDE_SLICES[2])
        eighth = self._run(quarter, *_SIDE_SLICES[3])
        return half, quarter, eighth

    def contrast_taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B,1,H,W) -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]; H and W >= 16."""
        if len(self.features) < _CONTRAST_SLICES[-1][1]:
            raise RuntimeError("a fusion-only VGG-19 (up to relu3_4) has no contrastive taps")
        taps = []
        for start, stop in _CONTRAST_SLICES:
            x = self._run(x, start, stop)
            taps.append(x)
        return taps
