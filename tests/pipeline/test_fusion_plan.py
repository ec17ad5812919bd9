"""What a ``coconet fuse`` run is planned to read and write, checked without a model: model
sources told apart, pairs read and resized, output formats that cannot hold the result refused,
and a folder plan in natural order. (The CLI's one-line errors are in tests/pipeline/cli.)"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.imageio import ImageError, write_image
from pipeline.fusion_plan import (
    ModelSourceError,
    check_model_source,
    check_output,
    check_output_location,
    plan_directory,
    read_pair,
)


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_model_sources_are_told_apart(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights")
    assert check_model_source(str(model)) is False  # a file
    assert check_model_source("official") is False
    for uri in ("models:/coconet@champion", "runs:/abc/model", "file:/tmp/m"):
        assert check_model_source(uri) is True
    with pytest.raises(ModelSourceError, match=r"nothing\.pt: no such model file") as info:
        check_model_source("nothing.pt")
    assert isinstance(info.value, ValueError) and "models:/<name>@<alias>" in str(info.value)


@pytest.mark.parametrize("ir_shape", [(31, 45), (9, 13)])  # larger (shrunk), smaller (enlarged)
def test_resize_brings_the_infrared_image_to_the_odd_visible_size(tmp_path, ir_shape):
    vis, ir = tmp_path / "vis.png", tmp_path / "ir.png"
    write_image(vis, _rand((17, 23, 3), 1))
    write_image(ir, _rand(ir_shape, 2))
    with pytest.raises(ImageError) as info:
        read_pair(vis, ir)
    message = str(info.value)
    assert message.startswith(f"{ir} is {ir_shape[1]}x{ir_shape[0]} but {vis} is 23x17")
    assert "--resize" in message
    vis_image, ir_image = read_pair(vis, ir, resize=True)
    assert vis_image.shape == (17, 23, 3) and ir_image.shape == (17, 23)
    assert ir_image.dtype == np.float32 and ir_image.min() >= 0.0 and ir_image.max() <= 1.0


@pytest.mark.parametrize(
    ("name", "colour", "bits", "needle"),
    [("o.gif", False, 8, "unsupported output format"),
     ("o.jpg", False, 16, "16-bit output needs a .png or .tif file"),
     ("o.png", True, 16, "16-bit colour output needs a .tif file")],
)  # fmt: skip
def test_output_formats_that_cannot_hold_the_result_are_refused(tmp_path, name, colour, bits,
                                                                needle):  # fmt: skip
    with pytest.raises(ImageError, match=needle) as info:
        check_output(tmp_path / name, colour, bits)
    assert str(info.value).startswith(str(tmp_path / name))


def test_formats_that_hold_the_result_pass(tmp_path):
    for name, colour, bits in (("o.png", False, 16), ("o.tif", True, 16), ("o.JPG", True, 8)):
        check_output(tmp_path / name, colour, bits)  # no error
    check_output_location(tmp_path / "new" / "deeper" / "fused.png")  # missing folders are fine
    check_output_location(tmp_path / "new" / "out", folder=True)
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_plan_directory_pairs_by_name_in_natural_order(tmp_path):
    for folder, seed in (("vis", 0), ("ir", 100)):
        for k, name in enumerate(("p10.png", "p2.bmp", "p1.png")):
            write_image(tmp_path / folder / name, _rand((8, 12), seed + k))
    out = tmp_path / "fused"
    plan = plan_directory(tmp_path / "vis", tmp_path / "ir", out, suffix=".tif", bits=16)
    assert [(v.name, i.name, o) for v, i, o in plan] == [
        ("p1.png", "p1.png", out / "p1.tif"),
        ("p2.bmp", "p2.bmp", out / "p2.tif"),
        ("p10.png", "p10.png", out / "p10.tif"),
    ]
    assert plan[0][0].parent == tmp_path / "vis" and plan[0][1].parent == tmp_path / "ir"
    assert not out.exists()  # planning writes nothing
