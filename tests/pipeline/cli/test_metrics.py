"""``coconet metrics``: single triple, folders, CSV/JSON output and bad inputs."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.cli import main
from pipeline.core.imageio import read_image, write_image
from pipeline.core.params import PROJECT_ROOT
from pipeline.metrics import METRIC_NAMES, compute_metrics

MIRROR = Path(os.environ.get("COCONET_MIRROR", PROJECT_ROOT.parent / "shared" / "mirror"))
TNO = (
    MIRROR / "raw.githubusercontent.com/Zhaozixiang1228/IVIF-DIDFuse"
    "/5f287300dce7cbc90b9e08e6872455af6baa279f/Datasets/Test_data_TNO"
)


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run ``coconet metrics ARGS`` in-process; return (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["coconet", "metrics", *args])
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def _image(seed: int, shape=(48, 52)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 0.5 + 0.3 * np.sin(xx / (3 + seed)) * np.cos(yy / 4) + rng.normal(0, 0.03, shape)
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    """ir/, vis/, fused/ with two pairs named a and b (fused = average)."""
    dirs = {role: tmp_path / role for role in ("ir", "vis", "fused")}
    for i, name in enumerate(("a", "b")):
        ir, vis = _image(2 * i), _image(2 * i + 1)
        write_image(dirs["ir"] / f"{name}.png", ir)
        write_image(dirs["vis"] / f"{name}.png", vis)
        write_image(dirs["fused"] / f"{name}.png", (ir + vis) / 2)
    return dirs


def _single_args(folders: dict[str, Path], name: str = "a") -> list[str]:
    return [
        arg
        for role in ("ir", "vis", "fused")
        for arg in (f"--{role}", str(folders[role] / f"{name}.png"))
    ]


def test_single_triple_table(monkeypatch, capsys, folders):
    code, out, err = run(monkeypatch, capsys, *_single_args(folders))
    assert code == 0, err
    for name in METRIC_NAMES:
        assert name in out
    assert "matlab" in out


def test_single_triple_json_matches_api(monkeypatch, capsys, folders):
    code, out, _ = run(
        monkeypatch, capsys, *_single_args(folders), "--json", "--convention", "cddfuse"
    )
    assert code == 0
    payload = json.loads(out)
    images = [read_image(folders[role] / "a.png") for role in ("ir", "vis", "fused")]
    expected = compute_metrics(*images, convention="cddfuse")
    assert payload["convention"] == "cddfuse"
    assert payload["metrics"]["Nabf"] is None  # NaN -> null
    for name in METRIC_NAMES:
        if name != "Nabf":
            assert payload["metrics"][name] == pytest.approx(expected[name], rel=1e-12)


def test_folders_csv_and_mean(monkeypatch, capsys, folders, tmp_path):
    csv_path = tmp_path / "out" / "scores.csv"
    code, out, err = run(
        monkeypatch, capsys,
        "--ir-dir", str(folders["ir"]), "--vis-dir", str(folders["vis"]),
        "--fused-dir", str(folders["fused"]), "--csv", str(csv_path),
    )  # fmt: skip
    assert code == 0, err
    assert "mean" in out and "a" in out and "b" in out
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["image"] for r in rows] == ["a", "b", "mean"]
    for name in METRIC_NAMES:
        values = [float(r[name]) for r in rows]
        assert values[2] == pytest.approx((values[0] + values[1]) / 2, rel=1e-12)


def test_folders_json(monkeypatch, capsys, folders):
    code, out, _ = run(
        monkeypatch, capsys, "--json",
        "--ir-dir", str(folders["ir"]), "--vis-dir", str(folders["vis"]),
        "--fused-dir", str(folders["fused"]),
    )  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert [item["name"] for item in payload["images"]] == ["a", "b"]
    assert set(payload["mean"]) == set(METRIC_NAMES)


def test_missing_file(monkeypatch, capsys, folders):
    (folders["fused"] / "a.png").unlink()
    code, out, err = run(monkeypatch, capsys, *_single_args(folders))
    assert code == 1
    assert f"{folders['fused'] / 'a.png'}: no such file" in err


def test_size_mismatch_names_both_files_and_sizes(monkeypatch, capsys, folders):
    write_image(folders["fused"] / "a.png", _image(7, shape=(48, 51)))
    code, _, err = run(monkeypatch, capsys, *_single_args(folders))
    assert code == 1
    assert str(folders["fused"] / "a.png") in err and "51x48" in err
    assert str(folders["ir"] / "a.png") in err and "52x48" in err


def test_unreadable_file(monkeypatch, capsys, folders):
    (folders["vis"] / "a.png").write_bytes(b"not an image at all")
    code, _, err = run(monkeypatch, capsys, *_single_args(folders))
    assert code == 1
    assert f"{folders['vis'] / 'a.png'}: not a readable image" in err


def test_unmatched_names_in_folders(monkeypatch, capsys, folders):
    (folders["fused"] / "b.png").rename(folders["fused"] / "c.png")
    code, _, err = run(
        monkeypatch, capsys,
        "--ir-dir", str(folders["ir"]), "--vis-dir", str(folders["vis"]),
        "--fused-dir", str(folders["fused"]),
    )  # fmt: skip
    assert code == 1
    assert "unmatched image names" in err and "lacks b" in err and "lacks c" in err


def test_unwritable_csv(monkeypatch, capsys, folders, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code, _, err = run(monkeypatch, capsys, *_single_args(folders), "--csv", str(blocker / "x.csv"))
    assert code == 1 and "cannot write" in err and "x.csv" in err


def test_too_small_image(monkeypatch, capsys, tmp_path):
    paths = []
    for role in ("ir", "vis", "fused"):
        paths += [f"--{role}", str(write_image(tmp_path / f"{role}.png", _image(1, (30, 30))))]
    code, _, err = run(monkeypatch, capsys, *paths)
    assert code == 1 and "too small" in err and "fused.png" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--ir", "a.png", "--vis", "b.png"], "all three of --ir, --vis and --fused"),
        (["--ir-dir", "x", "--vis-dir", "y"], "all three of --ir-dir"),
        (["--ir", "a.png", "--vis-dir", "y"], "not both"),
        (["--convention", "python"], "'python' is not one of 'matlab', 'cddfuse'"),
    ],
)
def test_usage_errors(monkeypatch, capsys, args, message):
    code, _, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err


def test_real_tno_pair_json(monkeypatch, capsys, tmp_path):
    ir_path, vis_path = TNO / "IR1.bmp", TNO / "VIS1.bmp"
    if not (ir_path.is_file() and vis_path.is_file()):
        pytest.skip(f"TNO pair not in the data mirror ({TNO}); set COCONET_MIRROR")
    fused_path = write_image(
        tmp_path / "fused.png", (read_image(ir_path) + read_image(vis_path)) / 2
    )
    args = ["--ir", str(ir_path), "--vis", str(vis_path), "--fused", str(fused_path), "--json"]
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 0, err
    values = json.loads(out)["metrics"]
    assert all(math.isfinite(values[name]) for name in METRIC_NAMES)
    # Averaging never creates stronger edges than both sources (up to 8-bit rounding).
    assert values["Nabf"] < 1e-3
    assert 1.0 < values["SSIM"] < 2.0 and 0.0 < values["Qabf"] < 1.0
    assert values["PSNR"] > 48.13  # the toolbox form adds 20 log10(255) dB
