"""Converting a checkpoint of the official CoCoNet code (``models/official.py``).

The reference is ``../shared/official_coconet`` (see its README): ``latest.pth``, a checkpoint in
the official format with random non-trivial weights, and ``pair.npz``, a TNO pair with the
official network's output for it.

Mutations these tests were checked against (each fails at least one test here or in
test_losses.py): BatchNorm before LeakyReLU in ``conv_block``; relu2_1 for relu2_2 as a VGG side
tap; relu*_2 for relu*_1 in the contrastive loss; an L2 gradient magnitude for |Gx| + |Gy|; the
key mapping off by one block (BatchNorm targets, VGG slice indices, fusion-conv block order).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import official
from models.coconet import CoCoNet, conv_block
from models.official import (
    OfficialCheckpointError,
    complete_vgg,
    convert_official_checkpoint,
    key_map,
    save_converted,
)
from models.state import is_contrast_only
from models.vgg import VGG19Features
from pipeline.core.params import PROJECT_ROOT

OFFICIAL_DIR = PROJECT_ROOT.parent / "shared" / "official_coconet"
CROP = (slice(None), slice(None), slice(200, 264), slice(300, 396))  # 64x96: fast forwards
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def official_files() -> tuple[Path, Path]:
    checkpoint, pair = OFFICIAL_DIR / "latest.pth", OFFICIAL_DIR / "pair.npz"
    if not (checkpoint.is_file() and pair.is_file()):
        pytest.skip(f"official reference checkpoint/pair not found in {OFFICIAL_DIR}")
    return checkpoint, pair


@pytest.fixture(scope="module")
def official_state(official_files) -> dict[str, torch.Tensor]:
    """The raw official state dict (official names)."""
    return torch.load(official_files[0], weights_only=True, map_location="cpu")["state_dict"]


@pytest.fixture(scope="module")
def pair(official_files) -> dict[str, torch.Tensor]:
    with np.load(official_files[1]) as data:
        return {k: torch.from_numpy(data[k]) for k in ("vis", "ir", "fused")}


def _model(state: dict[str, torch.Tensor]) -> CoCoNet:
    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random").eval()
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("vgg.features.") for k in result.missing_keys)
    return model


def _run(model: CoCoNet, pair: dict[str, torch.Tensor], crop=CROP) -> torch.Tensor:
    with torch.inference_mode():
        return model(pair["vis"][crop], pair["ir"][crop])


@pytest.fixture(scope="module")
def converted(official_files):
    return convert_official_checkpoint(official_files[0])


@pytest.fixture(scope="module")
def crop_output(converted, pair) -> torch.Tensor:
    return _run(_model(converted[0]), pair)


def _write(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "latest.pth") -> Path:
    path = tmp_path / name
    torch.save({"meta": {"epoch": 1, "iter": 5}, "state_dict": state}, path)
    return path


def test_converted_checkpoint_reproduces_the_official_output(converted, pair):
    model = _model(converted[0])
    fused = _run(model, pair, crop=(...,))
    assert fused.shape == pair["fused"].shape
    assert (fused - pair["fused"]).abs().max() < TOLERANCE


def test_report(converted, official_state):
    state, report = converted
    assert report.skipped == tuple(
        sorted(k for k in official_state if k.startswith(("se_32.", "att_deconv9.")))
    )
    assert len(report.skipped) == 9
    assert report.converted == len(state) == len(official_state) - len(report.skipped)
    assert report.vgg_from_file == (
        *("conv1_1", "conv1_2", "conv2_1", "conv2_2"),
        *("conv3_1", "conv3_2", "conv3_3", "conv3_4"),
    )
    assert report.vgg_not_set == tuple(f"conv{b}_{n}" for b in (4, 5) for n in range(1, 5))
    assert report.meta == {"epoch": 2, "iter": 1994}
    ours = CoCoNet(vgg_weights="random").state_dict()
    unset = {k for k in ours if k not in state}
    assert unset == {
        f"vgg.features.{official.VGG19_CONVS[name]}.{leaf}"
        for name in report.vgg_not_set
        for leaf in ("weight", "bias")
    }


def test_module_prefix_and_optimizer_entry_are_accepted(tmp_path, official_state, converted):
    path = tmp_path / "ddp.pth"
    torch.save(
        {
            "meta": {"epoch": 3, "iter": 7},
            "state_dict": {f"module.{k}": v for k, v in official_state.items()},
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        },
        path,
    )
    state, report = convert_official_checkpoint(path)
    assert state.keys() == converted[0].keys()
    assert all(torch.equal(state[k], converted[0][k]) for k in state)
    assert report.meta == {"epoch": 3, "iter": 7}


def test_leftover_key_is_an_error(tmp_path, official_state):
    state = dict(official_state, **{"conv11.weight": torch.zeros(1)})
    path = _write(tmp_path, state)
    with pytest.raises(OfficialCheckpointError, match=r"unexpected keys: conv11\.weight") as info:
        convert_official_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_key_is_an_error(tmp_path, official_state):
    state = {k: v for k, v in official_state.items() if k != "bn7_2.running_var"}
    path = _write(tmp_path, state)
    with pytest.raises(OfficialCheckpointError, match=r"missing keys: bn7_2\.running_var") as info:
        convert_official_checkpoint(path)
    assert str(path) in str(info.value)


def test_wrong_shape_is_an_error(tmp_path, official_state):
    state = dict(official_state, **{"deconv7.weight": torch.zeros(64, 128, 1, 1)})
    path = _write(tmp_path, state)
    with pytest.raises(OfficialCheckpointError, match=r"wrong shapes: deconv7\.weight") as info:
        convert_official_checkpoint(path)
    assert str(path) in str(info.value)


def test_not_a_checkpoint_is_an_error(tmp_path):
    with pytest.raises(OfficialCheckpointError, match="no such"):
        convert_official_checkpoint(tmp_path / "absent.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="not a PyTorch zip checkpoint"):
        convert_official_checkpoint(bad)


def test_half_precision_weights_are_widened(tmp_path, official_state, converted):
    half = {k: v.half() if v.is_floating_point() else v for k, v in official_state.items()}
    state, _ = convert_official_checkpoint(_write(tmp_path, half))
    for key, value in state.items():
        assert value.dtype == converted[0][key].dtype, key
    weight = "mam8.attention.query.weight"
    assert torch.allclose(state[weight], converted[0][weight], atol=1e-2)


@pytest.mark.parametrize(
    ("bad", "message"),
    [(torch.tensor([1, 2]), r"deconv7\.bias holds torch\.int64 values where float weights"),
     (torch.tensor([float("nan"), 0.0]), r"deconv7\.bias holds NaN or infinite weights")],
)  # fmt: skip
def test_integer_or_non_finite_weights_are_refused_naming_the_tensor(
    tmp_path, official_state, bad, message
):
    shape = official_state["deconv7.bias"].shape
    state = dict(official_state, **{"deconv7.bias": bad.expand(shape[0] // 2, 2).reshape(shape)})
    with pytest.raises(OfficialCheckpointError, match=message):
        convert_official_checkpoint(_write(tmp_path, state))


def test_a_compressed_storage_bomb_is_refused_before_allocation(tmp_path):
    """A few KB of deflated zeros declaring gigabytes of floats: refused from the zip."""
    path = tmp_path / "bomb.pth"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, tmp_path / "plain.pth")
    with (
        zipfile.ZipFile(tmp_path / "plain.pth") as plain,
        zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bomb,
    ):
        for info in plain.infolist():
            bomb.writestr(info.filename, plain.read(info.filename))
    with pytest.raises(OfficialCheckpointError, match="compressed record"):
        convert_official_checkpoint(path)


@pytest.mark.parametrize(
    "first,second",
    [
        ("bn1_1", "bn1_2"),  # consecutive encoder blocks
        ("bn4_1", "bn4_2"),  # the block before and after the deepest MAM
        ("bn8_1", "bn8_2"),  # consecutive decoder blocks
        ("se_128.gamma", "se_64.gamma"),  # consecutive attention modules
        ("vgg19.slice3.13", "vgg19.slice3.15"),  # VGG conv3_2 and conv3_3
    ],
)
def test_mapping_off_by_one_block_changes_the_output(
    tmp_path, official_state, pair, crop_output, first, second
):
    """Swapping two consecutive same-shaped blocks moves the output beyond the tolerance.

    (On this crop; the attention gammas are small, so their swap moves it least: ~6x.)
    """
    state = dict(official_state)
    for key in official_state:
        if key == first or key.startswith(f"{first}."):
            other = second + key.removeprefix(first)
            state[key], state[other] = official_state[other], official_state[key]
    assert any(not torch.equal(state[k], official_state[k]) for k in state)
    swapped = _run(_model(convert_official_checkpoint(_write(tmp_path, state))[0]), pair)
    assert (swapped - crop_output).abs().max() > 3 * TOLERANCE


def test_fusion_conv_blocks_must_be_reordered(monkeypatch, official_files, pair, crop_output):
    monkeypatch.setattr(official, "_fusion_weight", lambda weight: weight)
    unpermuted = _run(_model(convert_official_checkpoint(official_files[0])[0]), pair)
    assert (unpermuted - crop_output).abs().max() > 100 * TOLERANCE


def test_key_map_table():
    """The mapping written out once more, so an off-by-one is caught without the shared file."""
    mapping = key_map()
    # fmt: off
    expected_modules = {
        "conv1_1": "enc1.0.0", "bn1_1": "enc1.0.2", "conv1_2": "enc1.1.0", "bn1_2": "enc1.1.2",
        "conv2_1": "enc2.0.0", "bn2_1": "enc2.0.2", "conv2_2": "enc2.1.0", "bn2_2": "enc2.1.2",
        "conv3_1": "enc3.0.0", "bn3_1": "enc3.0.2", "conv3_2": "enc3.1.0", "bn3_2": "enc3.1.2",
        "conv4_1": "enc4.0", "bn4_1": "enc4.2", "se_256": "mam8.attention",
        "deconv4": "mam8.fuse", "conv4_2": "bottleneck.0", "bn4_2": "bottleneck.2",
        "deconv6": "up4.conv", "se_128": "mam4.attention", "att_deconv7": "mam4.fuse",
        "conv7_1": "dec4.0.0", "bn7_1": "dec4.0.2", "conv7_2": "dec4.1.0", "bn7_2": "dec4.1.2",
        "deconv7": "up2.conv", "se_64": "mam2.attention", "att_deconv8": "mam2.fuse",
        "conv8_1": "dec2.0.0", "bn8_1": "dec2.0.2", "conv8_2": "dec2.1.0", "bn8_2": "dec2.1.2",
        "deconv8": "up1.conv", "conv9_1": "dec1.0.0", "bn9_1": "dec1.0.2", "conv9_2": "dec1.1.0",
        "conv10": "out",
        "vgg19.slice1.0": "vgg.features.0", "vgg19.slice1.3": "vgg.features.2",
        "vgg19.slice2.6": "vgg.features.5", "vgg19.slice2.8": "vgg.features.7",
        "vgg19.slice3.11": "vgg.features.10", "vgg19.slice3.13": "vgg.features.12",
        "vgg19.slice3.15": "vgg.features.14", "vgg19.slice3.17": "vgg.features.16",
    }
    # fmt: on
    leaves = {"conv_1": "query", "conv_2": "key", "conv_3": "value"}
    for ours, theirs in mapping.items():
        module, _, leaf = theirs.rpartition(".")
        if module.startswith("se_"):
            if leaf == "gamma":
                assert ours == f"{expected_modules[module]}.gamma"
                continue
            module, sub = module.split(".")
            assert ours == f"{expected_modules[module]}.{leaves[sub]}.{leaf}"
        else:
            assert ours == f"{expected_modules[module]}.{leaf}", theirs
    assert len(mapping) == len(set(mapping.values())) == 144


def test_fusion_weight_reorders_input_blocks():
    weight = torch.arange(3.0).repeat_interleave(2).reshape(1, 6, 1, 1)  # blocks 0, 1, 2 of C=2
    reordered = official._fusion_weight(weight)
    # official [unet, VGG(ir), VGG(vis)] -> ours [unet, VGG(vis), VGG(ir)]
    assert reordered.flatten().tolist() == [0, 0, 2, 2, 1, 1]


def test_save_converted_writes_a_loadable_model_checkpoint(tmp_path, official_files, converted):
    out = tmp_path / "artifacts" / "model.pt"
    report = save_converted(official_files[0], out, vgg_weights="random")
    assert report == converted[1]
    assert [p.name for p in out.parent.iterdir()] == ["model.pt"]  # no temporary file left
    checkpoint = torch.load(out, weights_only=True, map_location="cpu")
    assert checkpoint["source"] == "official"
    assert checkpoint["vgg_weights"] == "official+random"
    meta = checkpoint["official"]
    assert meta["vgg_not_set"] == list(report.vgg_not_set)
    assert meta["skipped"] == list(report.skipped)
    assert meta["vgg_fill"] == "random" and meta["vgg_consistent"] is False
    # lean like every fusion model file: no VGG-19 layer only the training loss uses
    assert not any(is_contrast_only(key) for key in checkpoint["state_dict"])
    # what pipeline.inference.load_checkpoint_model does: meta-device model, strict assign
    with torch.device("meta"):
        model = CoCoNet(vgg_weights="random", fusion_only=True)
    model.load_state_dict(checkpoint["state_dict"], assign=True)
    for key, tensor in converted[0].items():
        if not is_contrast_only(key):
            assert torch.equal(model.state_dict()[key], tensor), key


def test_complete_vgg_fills_the_missing_layers_and_checks_consistency(tmp_path):
    state = CoCoNet(vgg_weights="random").state_dict()
    vgg_file = tmp_path / "vgg.pth"
    torch.save(
        {k.removeprefix("vgg."): v for k, v in state.items() if k.startswith("vgg.")}, vgg_file
    )
    partial = {
        k: v for k, v in state.items() if not k.startswith(("vgg.features.2", "vgg.features.3"))
    }
    full, consistent = complete_vgg(partial, str(vgg_file))
    assert list(full) == list(state) and consistent
    assert all(torch.equal(full[k], state[k]) for k in state)
    _, consistent = complete_vgg(partial, "random")
    assert not consistent


# --- details the official code fixes, pinned without the shared files ----------------------


def test_conv_block_is_conv_then_leaky_relu_then_batchnorm():
    torch.manual_seed(6)
    block = conv_block(3, 4).eval()
    bn = block[2]
    with torch.no_grad():  # BatchNorm away from identity, so the order matters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    x = torch.randn(2, 3, 5, 6)
    conv = F.conv2d(x, block[0].weight, block[0].bias, padding=1)
    expected = F.batch_norm(
        F.leaky_relu(conv, 0.2), bn.running_mean, bn.running_var, bn.weight, bn.bias, False
    )
    with torch.no_grad():
        torch.testing.assert_close(block(x), expected)
    assert [type(m) for m in conv_block(3, 4, norm=False)] == [torch.nn.Conv2d, torch.nn.LeakyReLU]


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(7)
    vgg = VGG19Features("random")
    with torch.no_grad():  # non-zero biases: every layer changes the features
        for param in vgg.features.parameters():
            if param.ndim == 1:
                param.uniform_(-0.1, 0.1)
    return vgg


def test_vgg_side_taps_are_official(vgg):
    """Official ``Vgg19_Unet``: relu1_1, max-pool, conv1_2 + ReLU (H/2); relu2_2 (H/4); relu3_4
    (H/8), torchvision indices written out."""
    f = vgg.features
    x = torch.randn(1, 1, 32, 32)

    def run(x, start, stop):
        for index in range(start, stop):
            x = f[index](x)
        return x

    with torch.no_grad():
        half = run(F.max_pool2d(run(x, 0, 2), 2), 2, 4)  # conv1_2 is features[2], its ReLU [3]
        quarter = run(half, 4, 9)  # pool, conv2_1, relu, conv2_2, relu2_2 = features[8]
        eighth = run(quarter, 9, 18)  # pool, conv3_1 .. relu3_4 = features[17]
        taps = vgg.side_taps(x)
    assert isinstance(f[8], torch.nn.ReLU) and f[7].out_channels == 128
    assert isinstance(f[17], torch.nn.ReLU) and f[16].out_channels == 256
    for tap, expected in zip(taps, (half, quarter, eighth), strict=True):
        torch.testing.assert_close(tap, expected)


def test_vgg_contrast_taps_are_relu_x_1(vgg):
    """Official ``Vgg19`` (P_loss.py): relu1_1, relu2_1, relu3_1, relu4_1, relu5_1."""
    f = vgg.features
    x = torch.randn(1, 1, 32, 32)
    stops = {"relu1_1": 2, "relu2_1": 7, "relu3_1": 12, "relu4_1": 21, "relu5_1": 30}
    with torch.no_grad():
        taps = vgg.contrast_taps(x)
        for tap, (name, stop) in zip(taps, stops.items(), strict=True):
            assert isinstance(f[stop - 1], torch.nn.ReLU), name
            torch.testing.assert_close(tap, f[:stop](x), msg=name)
    # conv<k>_1 is the first convolution after each pooling
    assert [f[stop - 2] for stop in stops.values()] == [f[i] for i in (0, 5, 10, 19, 28)]
