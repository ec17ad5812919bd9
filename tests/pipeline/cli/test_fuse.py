"""``coconet fuse`` / ``coconet model`` and pipeline/fuse.py: loading, colour, files, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.core.colour import rgb_to_ycbcr, ycbcr_to_rgb
from pipeline.core.imageio import read_image, write_image
from pipeline.core.params import PROJECT_ROOT
from pipeline.fusion import fuse_arrays
from pipeline.inference import ModelLoadError, load_fusion_model
from pipeline.training.outputs import write_model_file
from tests.helpers.models import CPU_FP32

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def _rand(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


# --- library ------------------------------------------------------------------------------


def test_colour_round_trip_keeps_chroma():
    rgb = _rand((9, 11, 3), 0)
    ycbcr = rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycbcr[..., 0], rgb @ np.float32([0.299, 0.587, 0.114]), atol=1e-5)
    np.testing.assert_allclose(ycbcr_to_rgb(ycbcr), rgb, atol=1e-5)


def test_colour_fusion_keeps_the_visible_chroma(random_model):
    vis = 0.25 + 0.5 * _rand((24, 30, 3), 1)  # mid-range: no clipping on the way back
    ir = _rand((24, 30), 2)
    fused = fuse_arrays(random_model, vis, ir, CPU_FP32)
    assert fused.shape == vis.shape
    fused_ycbcr, vis_ycbcr = rgb_to_ycbcr(fused), rgb_to_ycbcr(vis)
    inside = (fused > 0.001).all(-1) & (fused < 0.999).all(-1)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(fused_ycbcr[inside][:, 1:], vis_ycbcr[inside][:, 1:], atol=2e-5)
    grey = fuse_arrays(random_model, vis_ycbcr[..., 0], ir, CPU_FP32)
    np.testing.assert_allclose(fused_ycbcr[..., 0][inside], grey[inside], atol=2e-5)


def test_fuse_arrays_uses_eval_mode_and_restores_the_mode(random_model):
    vis, ir = _rand((20, 28), 3), _rand((20, 28), 4)
    expected = fuse_arrays(random_model, vis, ir, CPU_FP32)
    random_model.train()
    try:
        np.testing.assert_allclose(
            fuse_arrays(random_model, vis, ir, CPU_FP32), expected, atol=1e-6
        )
        assert random_model.training
    finally:
        random_model.eval()
    with torch.inference_mode():
        tensors = [torch.from_numpy(a)[None, None] * 2 - 1 for a in (vis, ir)]
        direct = (random_model(*tensors)[0, 0].numpy() + 1) / 2
    np.testing.assert_allclose(expected, direct, atol=1e-6)


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_checkpoint_round_trip(random_model, tmp_path, key):
    path = tmp_path / "ckpt.pt"
    torch.save({key: random_model.state_dict(), "epoch": 3}, path)
    loaded = load_fusion_model(str(path), CPU_FP32)
    assert not loaded.training and loaded.trainable_parameters() == 6_789_764
    vis, ir = _rand((17, 23), 5), _rand((17, 23), 6)
    np.testing.assert_allclose(
        fuse_arrays(loaded, vis, ir, CPU_FP32),
        fuse_arrays(random_model, vis, ir, CPU_FP32),
        atol=1e-6,
    )


def test_old_full_vgg_model_files_load_and_fuse_as_lean_ones(random_model, tmp_path):
    """A model.pt written before lean files (the whole VGG-19, 107 MB) fuses exactly as the
    lean file of the same network (only the VGG-19 layers fusion runs, about a third)."""
    old, lean = tmp_path / "old.pt", tmp_path / "lean.pt"
    torch.save({"state_dict": random_model.state_dict(), "vgg_weights": "random"}, old)
    write_model_file(lean, random_model, {"vgg_weights": "random", "params": {}})
    assert lean.stat().st_size < 0.35 * old.stat().st_size
    vis, ir = _rand((21, 30), 1), _rand((21, 30), 2)
    fused = [
        fuse_arrays(load_fusion_model(str(p), CPU_FP32), vis, ir, CPU_FP32) for p in (old, lean)
    ]
    np.testing.assert_array_equal(fused[0], fused[1])
    np.testing.assert_allclose(fused[0], fuse_arrays(random_model, vis, ir, CPU_FP32), atol=1e-6)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model file"):
        load_fusion_model(str(tmp_path / "missing.pt"), CPU_FP32)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="junk.pt"):
        load_fusion_model(str(junk), CPU_FP32)
    wrong = tmp_path / "wrong.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, wrong)
    with pytest.raises(ModelLoadError, match="do not fit CoCoNet"):
        load_fusion_model(str(wrong), CPU_FP32)


def test_mlflow_model_uri(random_model, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    from pipeline.tracking import pyfunc_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        pyfunc_model.log_model(random_model, {"vgg_weights": "random"})
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "fusion")
    mlflow.MlflowClient().set_registered_model_alias("fusion", "champion", version.version)
    vis, ir = _rand((16, 16), 7), _rand((16, 16), 8)
    expected = fuse_arrays(random_model, vis, ir, CPU_FP32)
    for uri in (f"runs:/{run.info.run_id}/model", "models:/fusion@champion"):
        loaded = load_fusion_model(uri, CPU_FP32)
        assert not loaded.training
        np.testing.assert_allclose(fuse_arrays(loaded, vis, ir, CPU_FP32), expected, atol=1e-6)
    with pytest.raises(ModelLoadError, match="models:/nothing@champion"):
        load_fusion_model("models:/nothing@champion", CPU_FP32)


# --- CLI ----------------------------------------------------------------------------------


def test_fuse_real_pair_end_to_end(tno_pair, model_checkpoint, random_model, tmp_path):
    ir, vis = tno_pair
    out = tmp_path / "out" / "fused.png"
    result = _invoke("fuse", "--ir", ir, "--vis", vis, "-o", out, "--model", model_checkpoint,
                     "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    fused = read_image(out)
    assert fused.shape == read_image(vis).shape == (247, 359)
    expected = fuse_arrays(random_model, read_image(vis), read_image(ir), CPU_FP32)
    assert np.abs(fused - np.rint(expected * 255) / 255).max() <= 1 / 255 + 1e-6
    assert fused.std() > 0


def _write_pairs(folder, pairs):
    for sub in ("ir", "vis"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, ir, vis, bits in pairs:
        write_image(folder / "ir" / name, ir, bits=bits)
        write_image(folder / "vis" / name, vis, bits=bits)


def test_fuse_directory_mixed_formats(model_checkpoint, tmp_path):
    pairs = [
        ("a.png", _rand((20, 24), 1), _rand((20, 24), 2), 16),
        ("b.tif", _rand((18, 18), 3), _rand((18, 18, 3), 4), 8),
        ("c.bmp", _rand((16, 20), 5), _rand((16, 20), 6), 8),
    ]
    _write_pairs(tmp_path, pairs)
    (tmp_path / "vis" / "d.jpg").write_bytes(b"")  # replaced below by a real colour JPEG
    Image.fromarray((_rand((17, 19, 3), 7) * 255).astype(np.uint8)).save(tmp_path / "vis" / "d.jpg")
    Image.fromarray((_rand((17, 19), 8) * 255).astype(np.uint8)).save(tmp_path / "ir" / "d.jpg")
    out = tmp_path / "fused"
    result = _invoke("fuse", "--ir-dir", tmp_path / "ir", "--vis-dir", tmp_path / "vis", "-o", out,
                     "--model", model_checkpoint, "--device", "cpu")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png", "d.png"]
    assert read_image(out / "b.png").shape == (18, 18, 3)  # colour visible -> colour output
    assert read_image(out / "d.png").shape == (17, 19, 3)
    assert read_image(out / "a.png").shape == (20, 24)


def test_fuse_sixteen_bit_output(model_checkpoint, tmp_path):
    _write_pairs(tmp_path, [("p.png", _rand((16, 16), 1), _rand((16, 16), 2), 8)])
    out = tmp_path / "p16.png"
    result = _invoke("fuse", "--ir", tmp_path / "ir" / "p.png", "--vis", tmp_path / "vis" / "p.png",
                     "-o", out, "--model", model_checkpoint, "--bits", "16")  # fmt: skip
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.mode.startswith("I")


def _assert_failed(result, *needles, absent=()):
    assert result.exit_code != 0
    for needle in needles:
        assert str(needle) in result.output, result.output
    for path in absent:
        assert not path.exists(), path
        leftovers = list(path.parent.glob(f".{path.stem}*")) if path.parent.exists() else []
        assert not leftovers, leftovers


def test_missing_and_unreadable_inputs(model_checkpoint, tmp_path):
    _write_pairs(tmp_path, [("p.png", _rand((16, 16), 1), _rand((16, 16), 2), 8)])
    out = tmp_path / "o" / "f.png"
    missing = tmp_path / "nope.png"
    result = _invoke("fuse", "--ir", missing, "--vis", tmp_path / "vis" / "p.png", "-o", out,
                     "--model", model_checkpoint)  # fmt: skip
    _assert_failed(result, missing, absent=[out])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG but not really")
    result = _invoke("fuse", "--ir", tmp_path / "ir" / "p.png", "--vis", garbage, "-o", out,
                     "--model", model_checkpoint)  # fmt: skip
    _assert_failed(result, garbage, absent=[out])
    result = _invoke("fuse", "--ir", tmp_path / "ir" / "p.png", "--vis", tmp_path / "vis" / "p.png",
                     "-o", out, "--model", tmp_path / "no_model.pt")  # fmt: skip
    _assert_failed(result, tmp_path / "no_model.pt", absent=[out])


def test_size_mismatch_and_resize(model_checkpoint, tmp_path):
    ir, vis = tmp_path / "ir.png", tmp_path / "vis.png"
    write_image(ir, _rand((20, 30), 1))
    write_image(vis, _rand((16, 24), 2))
    out = tmp_path / "f.png"
    result = _invoke("fuse", "--ir", ir, "--vis", vis, "-o", out, "--model", model_checkpoint)
    _assert_failed(result, ir, vis, "30x20", "24x16", "--resize", absent=[out])
    result = _invoke("fuse", "--ir", ir, "--vis", vis, "-o", out, "--model", model_checkpoint,
                     "--resize")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert read_image(out).shape == (16, 24)


def test_bad_folders_write_nothing(model_checkpoint, tmp_path):
    good = [("a.png", _rand((16, 16), 1), _rand((16, 16), 2), 8)]
    _write_pairs(tmp_path, good)
    out = tmp_path / "fused"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke("fuse", "--ir-dir", empty, "--vis-dir", tmp_path / "vis", "-o", out,
                     "--model", model_checkpoint)  # fmt: skip
    _assert_failed(result, empty, absent=[out / "a.png"])
    write_image(tmp_path / "vis" / "lonely.png", _rand((16, 16), 3))
    result = _invoke("fuse", "--ir-dir", tmp_path / "ir", "--vis-dir", tmp_path / "vis", "-o", out,
                     "--model", model_checkpoint)  # fmt: skip
    _assert_failed(result, "lonely", absent=[out / "a.png"])
    write_image(tmp_path / "ir" / "lonely.png", _rand((12, 16), 4))  # now matched, wrong size
    result = _invoke("fuse", "--ir-dir", tmp_path / "ir", "--vis-dir", tmp_path / "vis", "-o", out,
                     "--model", model_checkpoint)  # fmt: skip
    _assert_failed(result, "lonely.png", "16x12", absent=[out / "a.png", out / "lonely.png"])


def test_fuse_argument_errors(model_checkpoint, tmp_path):
    result = _invoke("fuse", "--ir", tmp_path / "a.png", "-o", tmp_path / "f.png")
    assert result.exit_code != 0 and "--vis" in result.output
    result = _invoke("fuse", "--ir", tmp_path / "a.png", "--vis", tmp_path / "b.png")
    assert result.exit_code != 0 and "-o" in result.output
    _write_pairs(tmp_path, [("p.png", _rand((16, 16), 1), _rand((16, 16), 2), 8)])
    out = tmp_path / "fused"
    result = _invoke("fuse", "--ir-dir", tmp_path / "ir", "--vis-dir", tmp_path / "vis", "-o", out,
                     "--model", model_checkpoint, "--ext", "xyz")  # fmt: skip
    _assert_failed(result, "'xyz' is not one of", "png", absent=[out / "p.xyz"])
    if not torch.cuda.is_available():
        ir, vis = tmp_path / "ir" / "p.png", tmp_path / "vis" / "p.png"
        result = _invoke("fuse", "--ir", ir, "--vis", vis, "-o", out / "p.png",
                         "--model", model_checkpoint, "--device", "cuda")  # fmt: skip
        _assert_failed(result, "CUDA", absent=[out / "p.png"])


def test_model_summary_command():
    result = _invoke("model", "--vgg-weights", "random", "--size", "64x48")
    assert result.exit_code == 0, result.output
    assert "6,789,764" in result.output and "20,023,232" in result.output
    assert "MACs at 64x48" in result.output
    assert _invoke("model", "--vgg-weights", "random", "--size", "big").exit_code != 0


# --- fast failures: nothing heavy is imported before the arguments are checked -----------

HEAVY = ("torch", "mlflow", "prefect")
# Runs the real entry point (plugins included) once per argument list, in one fresh process,
# and reports each command's exit code, output and the heavy modules imported so far.
REPORTER = """
import contextlib, io, json, sys
from pipeline.cli import main
argvs, names, report = json.loads(sys.argv[1]), json.loads(sys.argv[2]), []
for argv in argvs:
    sys.argv = ["coconet", *argv]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(m for m in names if m in sys.modules)
    output = out.getvalue() + err.getvalue()
    report.append({"argv": argv, "code": code, "output": output, "heavy": heavy})
print(json.dumps(report))
"""


def test_help_and_bad_input_fail_before_heavy_imports(tmp_path):
    ir, vis = tmp_path / "ir.png", tmp_path / "vis.png"
    write_image(ir, _rand((16, 16), 1))
    rgba = (_rand((16, 16, 4), 2) * 255).astype(np.uint8)
    rgba[..., 3] = 100
    Image.fromarray(rgba, "RGBA").save(vis)
    missing = tmp_path / "missing.png"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    fuse = ["fuse", "--model", "artifacts/model.pt"]
    commands = {
        "help": (["--help"], 0, "metrics"),
        "missing input": ([*fuse, "--ir", missing, "--vis", missing, "-o", tmp_path / "o.png"],
                          1, f"{missing}: no such file"),
        "output folder": ([*fuse, "--ir", ir, "--vis", vis, "-o", out_dir], 1, "is a folder"),
        "missing model": (["fuse", "--model", tmp_path / "none.pt", "--ir", ir, "--vis", vis,
                           "-o", tmp_path / "o.png"], 1, "none.pt: no such model file"),
        "bad size": (["model", "--size", "big"], 2, "--size must look like"),
        "metrics args": (["metrics", "--ir", ir], 2, "give all three"),
    }  # fmt: skip
    argvs = [[str(a) for a in argv] for argv, _, _ in commands.values()]
    result = subprocess.run(
        [sys.executable, "-c", REPORTER, json.dumps(argvs), json.dumps(HEAVY)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for (name, (_, code, needle)), got in zip(commands.items(), report, strict=True):
        assert got["heavy"] == [], f"{name}: imported {got['heavy']}"
        assert got["code"] == code, (name, got)
        assert needle in got["output"], (name, got["output"])
    transparent = report[3]["output"]  # inputs are read (and reported) before the model
    assert f"warning: {vis}: has transparent pixels" in transparent, transparent


NOT_FOR_FUSION = ("torchvision", "sympy", "torch._dynamo", "kornia", "mlflow", "requests")
NOT_FOR_FUSION += ("tifffile", "prefect", "rich.progress")


def test_fusing_a_pair_from_a_model_file_imports_only_what_fusion_needs(random_model, tmp_path):
    model = write_model_file(tmp_path / "model.pt", random_model, {"vgg_weights": "random"})
    vis, ir, out = tmp_path / "vis.png", tmp_path / "ir.png", tmp_path / "fused.png"
    write_image(vis, _rand((24, 40), 3))
    write_image(ir, _rand((24, 40), 4))
    argv = ["fuse", "--model", model, "--ir", ir, "--vis", vis, "-o", out, "--precision", "bf16"]
    result = subprocess.run(
        [sys.executable, "-c", REPORTER, json.dumps([[str(a) for a in argv]]),
         json.dumps(NOT_FOR_FUSION)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (got,) = json.loads(result.stdout.splitlines()[-1])
    assert got["code"] == 0 and out.is_file(), got
    assert got["heavy"] == [], f"fuse imported {got['heavy']}"
