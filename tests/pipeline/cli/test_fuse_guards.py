"""``coconet fuse`` output guards: a bad output location fails in one line before the model is
loaded, a failed write names the output (not its temp file), inputs are never overwritten,
same-named images in one folder are refused, and a dropped alpha channel is reported."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.imageio import ImageError, list_images, read_image, write_image

runner = CliRunner()


def _fuse(*args) -> object:
    return runner.invoke(app, ["fuse", *(str(a) for a in args)])


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """(infrared, visible) 16x16 grey PNGs."""
    ir, vis = tmp_path / "ir.png", tmp_path / "vis.png"
    write_image(ir, _rand((16, 16), 1))
    write_image(vis, _rand((16, 16), 2))
    return ir, vis


def _one_error_line(result, *needles: object) -> str:
    """The command failed with exactly one ``error:`` line (no traceback) holding ``needles``."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    return lines[0]


# --- the output location is checked before the model is loaded ---------------------------


def test_output_that_is_a_folder(pair, tmp_path):
    ir, vis = pair
    folder = tmp_path / "out"
    folder.mkdir()
    line = _one_error_line(
        _fuse("--ir", ir, "--vis", vis, "-o", folder, "--model", tmp_path / "none.pt"),
        folder,
        "is a folder",
    )
    assert "none.pt" not in line  # reported before the model is even looked at


def test_output_whose_parent_is_a_file(pair, tmp_path):
    ir, vis = pair
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    out = blocker / "sub" / "fused.png"
    _one_error_line(
        _fuse("--ir", ir, "--vis", vis, "-o", out, "--model", tmp_path / "none.pt"),
        out,
        f"{blocker} is a file",
    )


def test_output_in_a_read_only_folder(pair, tmp_path, monkeypatch):
    ir, vis = pair
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: make access() answer as for a normal user
        real_access = os.access
        monkeypatch.setattr(
            os,
            "access",
            lambda path, mode, **kw: (
                not (Path(path) == locked and mode & os.W_OK) and real_access(path, mode, **kw)
            ),
        )
    out = locked / "fused.png"
    try:
        _one_error_line(
            _fuse("--ir", ir, "--vis", vis, "-o", out, "--model", tmp_path / "none.pt"),
            out,
            "read-only",
        )
    finally:
        locked.chmod(0o755)


def test_output_on_a_full_disk_is_refused_up_front(pair, tmp_path, monkeypatch):
    ir, vis = pair
    real_statvfs = os.statvfs

    class Full:
        def __init__(self, path):
            self._stat = real_statvfs(path)

        def __getattr__(self, name):
            return 0 if name == "f_bavail" else getattr(self._stat, name)

    monkeypatch.setattr(os, "statvfs", Full)
    out = tmp_path / "fused.png"
    _one_error_line(
        _fuse("--ir", ir, "--vis", vis, "-o", out, "--model", tmp_path / "none.pt"),
        out,
        "no space left",
    )


def test_disk_full_while_writing_names_the_output(pair, tmp_path, model_checkpoint, monkeypatch):
    ir, vis = pair

    def no_space(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fp))

    monkeypatch.setattr(Image.Image, "save", no_space)
    out = tmp_path / "fused.png"
    line = _one_error_line(
        _fuse("--ir", ir, "--vis", vis, "-o", out, "--model", model_checkpoint),
        f"{out}: cannot write",
        "No space left on device",
    )
    assert ".fused." not in line  # not the temporary file's name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ir.png", "vis.png"]


# --- inputs are never overwritten ---------------------------------------------------------


@pytest.mark.parametrize("which", ["ir", "vis"])
def test_output_equal_to_an_input_is_refused(pair, tmp_path, model_checkpoint, which):
    ir, vis = pair
    target = ir if which == "ir" else vis
    before = target.read_bytes()
    spelled = tmp_path / "x" / ".." / target.name  # the same file, spelled differently
    (tmp_path / "x").mkdir()
    _one_error_line(
        _fuse("--ir", ir, "--vis", vis, "-o", spelled, "--model", model_checkpoint),
        "is the input",
        target,
    )
    assert target.read_bytes() == before


def _folders(tmp_path: Path, names=("a.png", "b.png")) -> tuple[Path, Path]:
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vis"
    for k, name in enumerate(names):
        write_image(ir_dir / name, _rand((16, 16), 2 * k))
        write_image(vis_dir / name, _rand((16, 16), 2 * k + 1))
    return ir_dir, vis_dir


@pytest.mark.parametrize("which", ["ir", "vis"])
def test_output_folder_equal_to_an_input_folder_is_refused(tmp_path, model_checkpoint, which):
    ir_dir, vis_dir = _folders(tmp_path)
    target = ir_dir if which == "ir" else vis_dir
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    _one_error_line(
        _fuse("--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", target, "--model", model_checkpoint),
        "is the input",
        target,
    )
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before


def test_output_file_that_would_replace_an_input_is_refused(tmp_path, model_checkpoint):
    """An infrared input that is a link to a file in the output folder."""
    ir_dir, vis_dir = _folders(tmp_path, names=("a.png",))
    out_dir = tmp_path / "fused"
    out_dir.mkdir()
    real = out_dir / "a.png"
    (ir_dir / "a.png").rename(real)
    (ir_dir / "a.png").symlink_to(real)
    before = real.read_bytes()
    _one_error_line(
        _fuse("--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", out_dir, "--model", model_checkpoint),
        out_dir / "a.png",
        "is the input",
    )
    assert real.read_bytes() == before


# --- same-named images, transparency -----------------------------------------------------


def test_same_name_in_two_formats_is_refused_naming_both(tmp_path, model_checkpoint):
    ir_dir, vis_dir = _folders(tmp_path)
    write_image(vis_dir / "a.bmp", _rand((16, 16), 9))
    out = tmp_path / "fused"
    _one_error_line(
        _fuse("--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", out, "--model", model_checkpoint),
        vis_dir / "a.bmp",
        vis_dir / "a.png",
    )
    assert not out.exists()
    with pytest.raises(ImageError, match="same name"):
        list_images(vis_dir)


def test_transparent_input_is_fused_with_a_warning_naming_it(
    pair, tmp_path, model_checkpoint, caplog
):
    ir, _ = pair
    rgba = (np.random.default_rng(3).random((16, 16, 4)) * 255).astype(np.uint8)
    rgba[..., 3] = 128
    vis = tmp_path / "vis_rgba.png"
    Image.fromarray(rgba, "RGBA").save(vis)
    out = tmp_path / "fused.png"
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        result = _fuse("--ir", ir, "--vis", vis, "-o", out, "--model", model_checkpoint)
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(vis) in m and "alpha channel is ignored" in m for m in warnings), warnings
    assert read_image(out).shape == (16, 16, 3)


def test_opaque_alpha_reads_silently(tmp_path, caplog):
    rgba = np.full((4, 4, 4), 255, np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        assert read_image(tmp_path / "opaque.png").shape == (4, 4, 3)
    assert not caplog.records


@pytest.mark.parametrize("budget", ["inf", "nan", "1e999", "-2GB", "lots"])
def test_bad_memory_budgets_fail_at_once(pair, tmp_path, budget):
    ir, vis = pair
    result = _fuse("--ir", ir, "--vis", vis, "-o", tmp_path / "o.png", "--model", "absent.pt",
                   "--max-memory", budget)  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --max-memory: memory size"), lines


@pytest.mark.parametrize(
    ("model", "needle"),
    [("s3://bucket/model", "reading s3:// needs the boto3 package, which is not installed"),
     ("gs://bucket/model", "reading gs:// needs the google package"),
     ("ftp://host/model.pt", "unsupported model URI"),
     ("absent.pt", "absent.pt: no such model file")],
)  # fmt: skip
def test_model_sources_this_installation_cannot_read_fail_in_one_line(
    pair, tmp_path, model, needle
):
    ir, vis = pair
    result = _fuse("--ir", ir, "--vis", vis, "-o", tmp_path / "o.png", "--model", model)
    assert result.exit_code == 1, result.output
    _one_error_line(result, needle, "models:/<name>@<alias>")
    assert not (tmp_path / "o.png").exists()


def test_a_huge_image_is_refused_from_its_header(pair, tmp_path, model_checkpoint):
    from tests.helpers.hostile import png_header_only

    ir, _ = pair
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))
    result = _fuse("--ir", ir, "--vis", bomb, "-o", tmp_path / "o.png", "--model",
                   model_checkpoint)  # fmt: skip
    assert result.exit_code == 1
    _one_error_line(result, f"{bomb}: 30000x30000 is 900.0 MP, over the limit of 100.0 MP")
    small = _fuse("--ir", ir, "--vis", pair[1], "-o", tmp_path / "o.png", "--model",
                  model_checkpoint, "--max-pixels", "100")  # fmt: skip
    assert small.exit_code == 1 and "16x16 is 0.0 MP, over the limit" in small.output


def test_folder_mode_is_all_or_nothing(tmp_path, model_checkpoint, monkeypatch):
    """A write failing on the fourth of six pairs (a full disk) leaves the output folder as it
    was: no fused image of this run, the earlier files untouched."""
    from pipeline import inference

    for folder in ("ir", "vis"):
        (tmp_path / folder).mkdir()
        for n in range(6):
            write_image(tmp_path / folder / f"p{n}.png", _rand((16, 16), n))
    out = tmp_path / "out"
    out.mkdir()
    (out / "p0.png").write_bytes(b"an earlier result")
    real, calls = inference.write_image, []

    def full_disk(path, image, bits=8):
        calls.append(path)
        if len(calls) == 4:
            raise ImageError(f"{path}: cannot write (No space left on device)")
        return real(path, image, bits=bits)

    monkeypatch.setattr(inference, "write_image", full_disk)
    result = _fuse("--ir-dir", tmp_path / "ir", "--vis-dir", tmp_path / "vis", "-o", out,
                   "--model", model_checkpoint)  # fmt: skip
    assert result.exit_code == 1 and "No space left" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["p0.png"]
    assert (out / "p0.png").read_bytes() == b"an earlier result"
