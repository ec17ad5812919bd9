"""CoCoNet network: shapes, parameter counts, gradients, channel attention, VGG-19 weights."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from models.attention import ChannelAttention, MultiLevelAttention
from models.coconet import CoCoNet, crop_padding, pad_to_multiple
from models.summary import count_macs
from models.vgg import (
    VGG19_FILE,
    VGG19_URL,
    VGGWeightsError,
    build_vgg19_features,
    luminance_first_conv,
    vgg19_layers,
)

TRAINABLE = 6_789_764  # the paper's ≈ 6.79 M
FROZEN = 20_023_232  # VGG-19 features with a one-channel first conv


def _pair(height: int, width: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(height * 1000 + width)
    return tuple(torch.rand(batch, 1, height, width, generator=generator) * 2 - 1 for _ in "vi")


@pytest.mark.parametrize("height,width", [(247, 359), (31, 17), (5, 7)])
def test_output_size_equals_input_size(random_model, height, width):
    vis, ir = _pair(height, width)
    with torch.inference_mode():
        out = random_model(vis, ir)
    assert out.shape == (1, 1, height, width)
    assert out.abs().max() <= 1


@pytest.mark.slow
def test_output_size_large_odd_image(random_model):
    vis, ir = _pair(678, 917)
    with torch.inference_mode():
        assert random_model(vis, ir).shape == (1, 1, 678, 917)


@pytest.mark.parametrize("height,width", [(678, 917), (247, 359), (5, 7), (16, 32)])
def test_pad_and_crop_round_trip(height, width):
    x = torch.rand(1, 2, height, width)
    padded, pads = pad_to_multiple(x)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    torch.testing.assert_close(crop_padding(padded, pads), x, rtol=0, atol=0)


def test_parameter_counts(random_model):
    assert random_model.trainable_parameters() == TRAINABLE
    assert random_model.frozen_parameters() == FROZEN
    assert all(not p.requires_grad for p in random_model.vgg.parameters())
    vgg_ids = {id(p) for p in random_model.vgg.parameters()}
    others = [p for p in random_model.parameters() if id(p) not in vgg_ids]
    assert sum(p.numel() for p in others) == TRAINABLE


def test_state_dict_holds_the_vgg(random_model):
    keys = random_model.state_dict().keys()
    convs = [k for k in keys if k.startswith("vgg.features.") and k.endswith(".weight")]
    assert len(convs) == 16  # the whole VGG-19 conv stack


def test_gradients_reach_every_trainable_parameter_and_no_vgg():
    torch.manual_seed(1)
    model = CoCoNet(vgg_weights="random").train()
    for module in model.modules():  # γ = 0 would leave q and k without gradient
        if isinstance(module, ChannelAttention):
            module.gamma.data.fill_(0.5)
    vis, ir = _pair(32, 48, batch=2)
    model(vis, ir).square().mean().backward()
    for name, param in model.named_parameters():
        if name.startswith("vgg."):
            assert param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_vgg_stays_in_eval_mode(random_model):
    random_model.train()
    try:
        assert not random_model.vgg.training
    finally:
        random_model.eval()


def _reference_ca(module: ChannelAttention, x: torch.Tensor) -> torch.Tensor:
    """The channel attention written out per sample."""
    outs = []
    for sample in x:
        q, k, v = (
            conv(sample[None])[0].flatten(1) for conv in (module.query, module.key, module.value)
        )
        energy = q @ k.T
        attention = torch.softmax(energy.max(dim=1, keepdim=True).values - energy, dim=1)
        outs.append((module.gamma * (attention @ v) + v).reshape(sample.shape))
    return torch.stack(outs)


def test_channel_attention_matches_its_definition():
    torch.manual_seed(2)
    module = ChannelAttention(6)
    x = torch.randn(2, 6, 5, 7)
    assert module.gamma.item() == 0.0
    torch.testing.assert_close(module(x), module.value(x))  # γ starts at 0: out = v
    module.gamma.data.fill_(0.8)
    torch.testing.assert_close(module(x), _reference_ca(module, x))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_channel_attention_inference_path_equals_its_definition(layout):
    """Without gradients the product and the sum are one fused call, in the input's layout:
    the same values as the definition, and a channels-last map stays channels-last."""
    torch.manual_seed(6)
    module = ChannelAttention(6).double()
    module.gamma.data.fill_(0.8)
    x = torch.randn(3, 6, 5, 7, dtype=torch.float64).contiguous(memory_format=layout)
    module = module.to(memory_format=layout)
    expected = _reference_ca(module, x)
    with torch.inference_mode():
        got = module(x)
    torch.testing.assert_close(got, expected)
    assert got.is_contiguous(memory_format=layout)


def test_channel_attention_gradcheck():
    torch.manual_seed(3)
    module = ChannelAttention(4).double()
    module.gamma.data.fill_(0.7)
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(module, (x,))
    assert torch.autograd.gradcheck(lambda g: _with_gamma(module, g, x.detach()), (module.gamma,))


def _with_gamma(module: ChannelAttention, gamma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.func.functional_call(module, {"gamma": gamma}, (x,))


def test_mam_training_gradients_equal_the_stacked_convolution():
    """In training the frozen VGG streams are convolved apart (no input gradient for them):
    the values and every gradient are those of the convolution over the stacked streams."""
    torch.manual_seed(5)
    mam = MultiLevelAttention(8).double()
    mam.attention.gamma.data.fill_(0.4)
    unet = torch.randn(2, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    vis, ir = (torch.randn(2, 8, 6, 6, dtype=torch.float64) for _ in range(2))
    split = mam(unet, vis, ir)
    stacked = torch.cat([unet, vis, ir])  # one tensor: the plain convolution over all streams
    ca = mam.attention
    plain = ca.attend(stacked, ca.attention_from_energy(ca.energy(stacked)))
    plain = mam.fuse(torch.cat(plain.chunk(3), dim=1))
    torch.testing.assert_close(split, plain)
    params = [unet, *mam.parameters()]
    weights = torch.randn_like(split)
    for got, expected in zip(
        torch.autograd.grad((split * weights).sum(), params),
        torch.autograd.grad((plain * weights).sum(), params),
        strict=True,
    ):
        torch.testing.assert_close(got, expected)


def test_mam_shares_one_attention_over_three_streams():
    torch.manual_seed(4)
    mam = MultiLevelAttention(8)
    mam.attention.gamma.data.fill_(0.3)
    streams = [torch.randn(2, 8, 6, 6) for _ in range(3)]
    separate = torch.cat([mam.attention(s) for s in streams], dim=1)
    torch.testing.assert_close(mam(*streams), mam.fuse(separate))


def test_macs_counted_at_any_size():
    assert count_macs(640, 480) == 2 * count_macs(320, 480)
    assert count_macs(640, 480) > 1e11


def _torchvision_vgg19_state(tmp_path) -> dict[str, torch.Tensor]:
    """A VGG-19 state dict in torchvision's layout (RGB first conv), random values."""
    torch.manual_seed(5)
    features = make_layers(cfgs["E"])
    return {f"features.{k}": v for k, v in features.state_dict().items()}


def test_vgg_layers_are_torchvisions_with_a_grey_first_conv():
    from torchvision.models import VGG19_Weights

    ours, theirs = vgg19_layers(), make_layers(cfgs["E"])
    assert [type(m) for m in ours] == [type(m) for m in theirs]
    shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    shapes["0.weight"] = torch.Size([64, 1, 3, 3])
    assert {k: v.shape for k, v in ours.state_dict().items()} == shapes
    assert str(ours) == str(theirs).replace("Conv2d(3, 64", "Conv2d(1, 64")
    assert VGG19_Weights.IMAGENET1K_V1.url == VGG19_URL


def test_vgg_from_local_file_adapts_the_first_conv(tmp_path):
    state = _torchvision_vgg19_state(tmp_path)
    path = tmp_path / "my_vgg19.pth"
    torch.save(state, path)
    features = build_vgg19_features(str(path))
    expected = (
        0.299 * state["features.0.weight"][:, 0]
        + 0.587 * state["features.0.weight"][:, 1]
        + 0.114 * state["features.0.weight"][:, 2]
    )
    torch.testing.assert_close(features[0].weight[:, 0], expected)
    torch.testing.assert_close(luminance_first_conv(state["features.0.weight"])[:, 0], expected)
    torch.testing.assert_close(features[28].weight, state["features.28.weight"])
    assert all(not p.requires_grad for p in features.parameters())


def test_vgg_imagenet_comes_from_the_torch_home_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / VGG19_FILE
    cached.parent.mkdir(parents=True)
    state = _torchvision_vgg19_state(tmp_path)
    torch.save(state, cached)
    model = CoCoNet(vgg_weights="imagenet")
    torch.testing.assert_close(model.vgg.features[2].weight, state["features.2.weight"])


def test_vgg_imagenet_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(VGGWeightsError) as info:
        CoCoNet(vgg_weights="imagenet")
    message = str(info.value)
    assert "random" in message and "model.vgg_weights" in message
    assert "TORCH_HOME" in message and "download stage" in message and VGG19_FILE in message


def test_vgg_file_with_the_official_name_must_match_its_hash(tmp_path):
    path = tmp_path / VGG19_FILE
    torch.save(_torchvision_vgg19_state(tmp_path), path)
    with pytest.raises(VGGWeightsError, match="sha256"):
        build_vgg19_features(str(path))


def test_vgg_missing_or_foreign_file_is_an_error(tmp_path):
    with pytest.raises(VGGWeightsError, match="no such VGG-19 weights file"):
        build_vgg19_features(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(VGGWeightsError, match="not VGG-19 weights"):
        build_vgg19_features(str(bad))
