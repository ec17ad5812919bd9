"""Convert a checkpoint of the official CoCoNet code into this project's CoCoNet.

The official code (github.com/runjia0124/CoCoNet, ``utils/checkpoint.py``) saves
``{'meta': {'epoch', 'iter'}, 'state_dict': ...[, 'optimizer': ...]}`` with its own module names
(``conv1_1``, ``bn1_1``, ``se_256.conv_1``, ``vgg19.slice1.0``, ``deconv4``, ``att_deconv7`` ...).
:func:`convert_official_checkpoint` renames every tensor its forward pass uses to ours and checks
that each lands in exactly one of our tensors with the same shape. Mapping rules:

* U-Net blocks: ``conv<i>`` / ``bn<i>`` -> ``<block>.0`` / ``<block>.2`` (our ``conv_block`` is
  Conv, LeakyReLU, BatchNorm like theirs), see ``_BLOCKS``; ``conv9_2`` has no BatchNorm (nor has
  ours); ``conv10`` -> ``out``; the upsample convolutions ``deconv6/7/8`` -> ``up4/up2/up1.conv``.
* Channel attention ``se_256/128/64`` -> ``mam8/mam4/mam2.attention``, with ``conv_1/2/3`` ->
  ``query/key/value`` (``q kᵀ`` energy; the value is the residual) and ``gamma`` -> ``gamma``.
* Fusion convolutions ``deconv4/att_deconv7/att_deconv8`` -> ``mam8/mam4/mam2.fuse``, with the
  input-channel blocks reordered. The official ``forward(ir, vis)`` is called as
  ``model(vis, ir)``, so its fusion convolutions see ``[unet, VGG(infrared), VGG(visible)]``
  while ours (``MultiLevelAttention(unet, vis, ir)``) see ``[unet, VGG(visible),
  VGG(infrared)]``: our weight is ``cat(W[:, :C], W[:, 2C:], W[:, C:2C])``. Its first input
  channel is the visible image, as ours, so ``conv1_1`` is copied unchanged.
* VGG: ``vgg19.slice1.0, slice1.3`` -> ``vgg.features.0, 2`` (the official slice 1 inserts a
  max-pool at index 2); ``slice2.<j>``, ``slice3.<j>`` -> ``vgg.features.<j-1>``. The file holds
  conv1_1 .. conv3_4 only; conv4_1 .. conv5_4 (used by our contrastive loss alone) are not set
  and the report says so.
* ``se_32`` and ``att_deconv9`` are built but never used by the official forward pass: skipped
  and reported. Any other key left over, any missing key or any shape mismatch raises
  :class:`OfficialCheckpointError` naming the file and the keys.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from models.coconet import CoCoNet
from models.errors import CoconetError
from models.state import fusion_state
from models.vgg import build_vgg19_features
from models.weights_file import WeightsFileError, load_weights_file

SOURCE = "official"

# (official conv, official BatchNorm or None, our conv_block prefix), in forward order
_BLOCKS = (
    ("conv1_1", "bn1_1", "enc1.0"),
    ("conv1_2", "bn1_2", "enc1.1"),
    ("conv2_1", "bn2_1", "enc2.0"),
    ("conv2_2", "bn2_2", "enc2.1"),
    ("conv3_1", "bn3_1", "enc3.0"),
    ("conv3_2", "bn3_2", "enc3.1"),
    ("conv4_1", "bn4_1", "enc4"),
    ("conv4_2", "bn4_2", "bottleneck"),
    ("conv7_1", "bn7_1", "dec4.0"),
    ("conv7_2", "bn7_2", "dec4.1"),
    ("conv8_1", "bn8_1", "dec2.0"),
    ("conv8_2", "bn8_2", "dec2.1"),
    ("conv9_1", "bn9_1", "dec1.0"),
    ("conv9_2", None, "dec1.1"),
)
# (official module, our module) for the other plainly renamed convolutions
_CONVS = (
    ("deconv6", "up4.conv"),
    ("deconv7", "up2.conv"),
    ("deconv8", "up1.conv"),
    ("conv10", "out"),
)
# (official CA, official 3C->C fusion conv, our MAM)
_ATTENTION = (
    ("se_256", "deconv4", "mam8"),
    ("se_128", "att_deconv7", "mam4"),
    ("se_64", "att_deconv8", "mam2"),
)
_CA_NAMES = (("conv_1", "query"), ("conv_2", "key"), ("conv_3", "value"))
SKIPPED_MODULES = ("se_32", "att_deconv9")  # built by the official code, never used

# Our VGG-19 convolutions: conventional name -> index in ``vgg.features``.
VGG19_CONVS = {
    "conv1_1": 0,
    "conv1_2": 2,
    "conv2_1": 5,
    "conv2_2": 7,
    "conv3_1": 10,
    "conv3_2": 12,
    "conv3_3": 14,
    "conv3_4": 16,
    "conv4_1": 19,
    "conv4_2": 21,
    "conv4_3": 23,
    "conv4_4": 25,
    "conv5_1": 28,
    "conv5_2": 30,
    "conv5_3": 32,
    "conv5_4": 34,
}
_OFFICIAL_VGG = tuple(VGG19_CONVS)[:8]  # conv1_1 .. conv3_4: all the official file holds


class OfficialCheckpointError(CoconetError, ValueError):
    """An official CoCoNet checkpoint that cannot be converted (names the file and the keys)."""


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_official_checkpoint` did.

    ``converted``: number of our state-dict tensors set from the file; ``skipped``: official keys
    deliberately not used (``se_32.*``, ``att_deconv9.*``); ``vgg_from_file`` / ``vgg_not_set``:
    our VGG-19 convolutions (``conv1_1`` .. ``conv5_4``, indices in ``VGG19_CONVS``) set from the
    file / left unset; ``meta``: the official ``meta`` entry (epoch, iter) as plain values.
    """

    source: str
    converted: int
    skipped: tuple[str, ...]
    vgg_from_file: tuple[str, ...]
    vgg_not_set: tuple[str, ...]
    meta: dict[str, Any]

    def as_metadata(self) -> dict[str, Any]:
        """The report as plain types (loadable with ``weights_only=True``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _official_vgg_module(index: int) -> str:
    """Our ``vgg.features`` index (conv1_1 .. conv3_4) -> the official ``vgg19.slice<s>.<j>``.

    The official slice 1 is features[0:2], an inserted max-pool (index 2), features[2:4]; slices
    2 and 3 keep torchvision's index plus one (features[4:9] and features[9:18]).
    """
    if index < 2:
        return f"vgg19.slice1.{index}"
    return f"vgg19.slice{1 if index < 4 else 2 if index < 9 else 3}.{index + 1}"


def _module_pairs() -> Iterator[tuple[str, str]]:
    """(official module, our module) for every module whose tensors are copied unchanged."""
    for conv, bn, ours in _BLOCKS:
        yield conv, f"{ours}.0"
        if bn is not None:
            yield bn, f"{ours}.2"
    yield from _CONVS
    for ca, _fuse, mam in _ATTENTION:
        for theirs, our_name in _CA_NAMES:
            yield f"{ca}.{theirs}", f"{mam}.attention.{our_name}"
    for name in _OFFICIAL_VGG:
        index = VGG19_CONVS[name]
        yield _official_vgg_module(index), f"vgg.features.{index}"


def _our_shapes() -> dict[str, torch.Size]:
    with torch.device("meta"):
        return {k: v.shape for k, v in CoCoNet(vgg_weights="random").state_dict().items()}


def _our_dtypes() -> dict[str, torch.dtype]:
    with torch.device("meta"):
        return {k: v.dtype for k, v in CoCoNet(vgg_weights="random").state_dict().items()}


def key_map() -> dict[str, str]:
    """Our state-dict key -> the official key it is converted from."""
    modules = dict((ours, theirs) for theirs, ours in _module_pairs())
    for _ca, fuse, mam in _ATTENTION:
        modules[f"{mam}.fuse"] = fuse
    mapping = {}
    for key in _our_shapes():
        module, _, leaf = key.rpartition(".")
        if module in modules:
            mapping[key] = f"{modules[module]}.{leaf}"
    for ca, _fuse, mam in _ATTENTION:
        mapping[f"{mam}.attention.gamma"] = f"{ca}.gamma"
    return mapping


def _fusion_weight(weight: torch.Tensor) -> torch.Tensor:
    """Official input blocks [unet, VGG(ir), VGG(vis)] -> ours [unet, VGG(vis), VGG(ir)]."""
    unet, vgg_ir, vgg_vis = weight.chunk(3, dim=1)
    return torch.cat([unet, vgg_vis, vgg_ir], dim=1)


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, int | float | str | bool | None) else str(value)


def _load_official(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict without any ``module.`` prefix, meta) of an official checkpoint file."""
    if not path.is_file():
        raise OfficialCheckpointError(f"{path}: no such official checkpoint file")
    try:
        checkpoint = load_weights_file(path)
    except WeightsFileError as exc:
        raise OfficialCheckpointError(str(exc)) from exc
    if not isinstance(checkpoint, dict):
        raise OfficialCheckpointError(f"{path}: expected a dict, found {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)  # the official loader accepts both
    meta = checkpoint.get("meta", {}) if "state_dict" in checkpoint else {}
    if not isinstance(state, dict) or not state:
        raise OfficialCheckpointError(f"{path}: no 'state_dict' entry")
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise OfficialCheckpointError(
            f"{path}: state dict entries that are not tensors: {not_tensors}"
        )
    return {k.removeprefix("module."): v for k, v in state.items()}, _plain(meta)


def _as_float32(path: Path, key: str, tensor: torch.Tensor, expected: torch.dtype) -> torch.Tensor:
    """A tensor in our dtype: half and bfloat16 weights widened to float32; integer tensors
    where weights belong, or NaN/infinite weights, refused naming the tensor."""
    if not expected.is_floating_point:
        return tensor
    if not tensor.is_floating_point():
        raise OfficialCheckpointError(
            f"{path}: {key} holds {tensor.dtype} values where float weights belong"
        )
    tensor = tensor.to(torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise OfficialCheckpointError(f"{path}: {key} holds NaN or infinite weights")
    return tensor


def convert_official_checkpoint(
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Our CoCoNet state dict from an official checkpoint, and a report.

    The state dict has every key of ours except the VGG-19 convolutions the file lacks
    (``report.vgg_not_set``: conv4_1 .. conv5_4); :func:`complete_vgg` fills them. Raises
    :class:`OfficialCheckpointError` naming the file and the keys on a missing key, a key left
    over (other than ``se_32.*`` and ``att_deconv9.*``) or a shape that does not fit.
    """
    path = Path(path)
    theirs, meta = _load_official(path)
    mapping = key_map()
    shapes = _our_shapes()
    skipped = sorted(k for k in theirs if k.split(".")[0] in SKIPPED_MODULES)
    wanted = set(mapping.values())
    missing = sorted(wanted - set(theirs))
    leftover = sorted(set(theirs) - wanted - set(skipped))
    wrong = [
        f"{theirs_key} {tuple(theirs[theirs_key].shape)} for {ours} {tuple(shapes[ours])}"
        for ours, theirs_key in mapping.items()
        if theirs_key in theirs and theirs[theirs_key].shape != shapes[ours]
    ]
    problems = [
        f"{what}: {', '.join(keys)}"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", leftover),
            ("wrong shapes", wrong),
        )
        if keys
    ]
    if problems:
        raise OfficialCheckpointError(
            f"{path}: cannot convert the official checkpoint; " + "; ".join(problems)
        )
    fusion = {f"{mam}.fuse.weight" for _ca, _fuse, mam in _ATTENTION}
    dtypes = _our_dtypes()
    state = {}
    for ours, key in mapping.items():
        tensor = _as_float32(path, key, theirs[key], dtypes[ours])
        state[ours] = (_fusion_weight(tensor) if ours in fusion else tensor).clone()
    from_file = {int(k.split(".")[2]) for k in state if k.startswith("vgg.features.")}
    report = ConversionReport(
        source=str(path),
        converted=len(state),
        skipped=tuple(skipped),
        vgg_from_file=tuple(n for n, i in VGG19_CONVS.items() if i in from_file),
        vgg_not_set=tuple(n for n, i in VGG19_CONVS.items() if i not in from_file),
        meta=meta,
    )
    return state, report


def complete_vgg(
    state: dict[str, torch.Tensor], vgg_weights: str
) -> tuple[dict[str, torch.Tensor], bool]:
    """Fill the VGG-19 tensors ``state`` lacks from ``vgg_weights`` ('imagenet', 'random', a path).

    Returns the full state dict (our key order) and whether the VGG tensors already in ``state``
    equal those of ``vgg_weights`` (atol 1e-6), i.e. whether the whole VGG is one consistent
    network. The official code builds its VGG from ImageNet weights, so ``'imagenet'`` restores
    the relu4_1 and relu5_1 taps its contrastive loss uses; the fused image does not depend on
    them.
    """
    features = build_vgg19_features(vgg_weights).state_dict()
    full, consistent = {}, True
    for key in _our_shapes():
        if key in state:
            full[key] = state[key]
            if key.startswith("vgg.features."):
                reference = features[key.removeprefix("vgg.features.")]
                consistent = consistent and torch.allclose(state[key], reference, rtol=0, atol=1e-6)
        elif key.startswith("vgg.features."):
            full[key] = features[key.removeprefix("vgg.features.")].clone()
        else:
            raise KeyError(f"{key}: not in the state dict and not a VGG-19 tensor")
    return full, consistent


def save_converted(
    path_in: str | Path, path_out: str | Path, vgg_weights: str = "imagenet"
) -> ConversionReport:
    """Convert an official checkpoint and write it in the ``artifacts/model.pt`` format.

    The file is ``{'state_dict', 'vgg_weights', 'params', 'source': 'official', 'official':
    report}``, its state dict lean like every fusion model file (no VGG-19 layer only the
    training loss uses, :func:`models.state.fusion_state`); plain types besides the tensors, so
    ``torch.load(weights_only=True)`` reads it and ``pipeline.inference.load_checkpoint_model``
    loads it. The VGG layers the official file lacks
    come from ``vgg_weights``; ``'vgg_weights'`` in the file says ``official+<vgg_weights>``, and
    ``official.vgg_consistent`` whether the file's VGG layers equal those of ``vgg_weights``.
    Written to a temporary file beside ``path_out`` and renamed onto it.
    """
    state, report = convert_official_checkpoint(path_in)
    full, consistent = complete_vgg(state, vgg_weights)
    payload = {
        "state_dict": fusion_state(full),  # lean: fine-tuning fills conv4_1.. from its params
        "vgg_weights": f"{SOURCE}+{vgg_weights}",
        "params": {},
        "source": SOURCE,
        SOURCE: {**report.as_metadata(), "vgg_fill": vgg_weights, "vgg_consistent": consistent},
    }
    path_out = Path(path_out)
    path_out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path_out.parent, prefix=f".{path_out.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path_out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report
