"""Image reading/writing: bit depths, formats, atomic writes, pair matching."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.core.imageio import (
    ImageError,
    atomic_write,
    match_pairs,
    read_grey_uint8,
    read_image,
    write_image,
)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".jpg", ".tif"])
def test_grey_round_trip_keeps_values(tmp_path, suffix):
    image = np.tile(np.linspace(0, 1, 33, dtype=np.float32), (17, 1))
    path = write_image(tmp_path / f"ramp{suffix}", image)
    back = read_image(path)
    assert back.shape == (17, 33)
    tolerance = 3 / 255 if suffix == ".jpg" else 0.501 / 255
    assert np.abs(back - image).max() <= tolerance


def test_sixteen_bit_png_and_tiff_scale_to_unit_range(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "a.png")
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", values)
    for name in ("a.png", "a.tif"):
        np.testing.assert_allclose(read_image(tmp_path / name), values / 65535.0, atol=1e-6)


def test_colour_becomes_bt601_luma(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").shape == (2, 2, 3)
    assert read_grey_uint8(tmp_path / "c.png")[0, 0] == round(0.299 * 200)


def test_missing_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(ImageError, match="nope.png: no such file"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match="folder.png: is a folder, not an image"):
        read_image(tmp_path / "folder.png")
    (tmp_path / "empty.png").touch()
    with pytest.raises(ImageError, match="empty.png: an empty file"):
        read_image(tmp_path / "empty.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="bad.png: not a readable image"):
        read_image(bad)


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.png"

    def explode(tmp):
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, explode)
    assert list(tmp_path.iterdir()) == []


def test_match_pairs_reports_unmatched_and_empty(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    with pytest.raises(ImageError, match="no images"):
        match_pairs(ir=tmp_path / "ir", vis=tmp_path / "vis")
    for folder, names in (("ir", ["a", "b"]), ("vis", ["a"])):
        for name in names:
            write_image(tmp_path / folder / f"{name}.png", np.zeros((4, 4), np.float32))
    with pytest.raises(ImageError, match="lacks b"):
        match_pairs(ir=tmp_path / "ir", vis=tmp_path / "vis")


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = write_image(tmp_path / "out.png", np.zeros((4, 4), np.float32))
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~0o022
