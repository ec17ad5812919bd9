"""Per-image output contrast (models.contrast): the target statistics, flat images, checks."""

from __future__ import annotations

import pytest
import torch

from models.contrast import (
    OutputContrast,
    check_output_contrast,
    contrast_entry,
    normalise_contrast,
    output_contrast,
)


def test_each_image_gets_the_target_mean_and_spread():
    generator = torch.Generator().manual_seed(0)
    images = 0.3 + 0.05 * torch.rand(2, 1, 32, 48, generator=generator)
    images[1] *= 0.5  # another mean and spread: normalised on its own
    target = OutputContrast(0.45, 0.1)
    out = normalise_contrast(images, target)
    assert out.shape == images.shape and out.dtype == images.dtype
    for image in out:
        assert image.mean().item() == pytest.approx(0.45, abs=1e-6)
        assert image.std(correction=0).item() == pytest.approx(0.1, abs=1e-6)
    # an affine map per image: the order of the pixels is kept
    assert torch.equal(out[0].flatten().argsort(), images[0].flatten().argsort())


def test_the_result_stays_on_the_unit_scale_and_flat_images_stay_flat():
    generator = torch.Generator().manual_seed(1)
    out = normalise_contrast(
        torch.rand(1, 1, 16, 16, generator=generator), OutputContrast(0.5, 0.6)
    )
    assert out.min() >= 0 and out.max() <= 1 and (out == 0).any() and (out == 1).any()
    flat = normalise_contrast(torch.full((1, 1, 8, 8), 0.2), OutputContrast(0.4, 0.25))
    assert torch.equal(flat, torch.full((1, 1, 8, 8), 0.4))


def test_settings_from_params_and_model_files():
    assert output_contrast(None, None) is None
    assert output_contrast(0.42, 0.25) == OutputContrast(0.42, 0.25)
    assert check_output_contrast(None, "m.pt") is None
    assert check_output_contrast({"mean": 0.4, "sd": 0.2}, "m.pt") == OutputContrast(0.4, 0.2)

    class Model:
        output_contrast = OutputContrast(0.4, 0.2)

    assert contrast_entry(Model()) == {"mean": 0.4, "sd": 0.2}
    assert contrast_entry(object()) is None


@pytest.mark.parametrize(
    "bad",
    [
        {"mean": 0.4},
        {"mean": 2.0, "sd": 0.2},
        {"mean": 0.4, "sd": 0},
        [0.4, 0.2],
        "x",
        {"mean": True, "sd": 0.2},
    ],
)
def test_a_bad_model_file_entry_names_the_file(bad):
    with pytest.raises(ValueError, match=r"m\.pt: output_contrast must be"):
        check_output_contrast(bad, "m.pt")
