"""The train stage on a tiny synthetic patches file: outputs, tracking, resume, DDP, errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from models.coconet import CoCoNet
from models.objective import FusionObjective
from models.state import is_contrast_only
from pipeline.core.params import PROJECT_ROOT
from pipeline.core.paths import ProjectPaths
from pipeline.stages import train
from pipeline.training import checkpoint, trainer
from pipeline.training.distributed import Runtime
from tests.helpers.models import CPU_FP32
from tests.helpers.patches import write_patches
from tests.helpers.tags import repeated_facts


@pytest.fixture
def project(tmp_path, tracking_env):
    write_patches(tmp_path / "data" / "patches.h5")
    return ProjectPaths(tmp_path)


def model_state(paths: ProjectPaths) -> dict[str, torch.Tensor]:
    return torch.load(paths.model, weights_only=True)["state_dict"]


def test_two_phase_training_writes_every_output(project, tiny_params):
    import mlflow

    record = train.run(tiny_params(), project)

    saved = torch.load(project.model, weights_only=True)
    assert set(saved) >= {"state_dict", "vgg_weights", "params"}
    assert saved["vgg_weights"] == "random" and saved["output_contrast"] is None
    assert saved["params"]["train"]["batch_size"] == 4

    losses = pd.read_csv(project.loss_csv)
    assert list(losses.columns) == ["step", "epoch", "phase", *FusionObjective.names]
    assert losses["step"].tolist() == [1, 2, 3, 4]
    assert losses["phase"].tolist() == [1, 1, 2, 2]
    phase1, phase2 = losses[losses.phase == 1], losses[losses.phase == 2]
    assert (phase1["contrastive"] == 0).all()
    assert (phase2["contrastive"] > 0).all()
    assert np.allclose(losses["loss"], losses["adaptive"] + losses["contrastive"], rtol=1e-5)

    assert json.loads(project.run_info.read_text()) == record
    run = mlflow.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.phase1_epochs"] == "1"
    assert run.data.params["model.vgg_weights"] == "random"
    tags = run.data.tags
    assert tags["placement.device"] == "cpu" and tags["coconet.run"] == "training"
    assert tags["mlflow.source.git.commit"]
    assert repeated_facts(tags) == []
    expected = {"train/loss", "train/contrastive", "train/intensity", "train_epoch/loss"}
    assert expected | {"train_epoch/patches_per_s"} <= set(run.data.metrics)
    history = mlflow.MlflowClient().get_metric_history(record["run_id"], "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]
    lineage = {a.path for a in mlflow.MlflowClient().list_artifacts(record["run_id"], "lineage")}
    assert "lineage/params.yaml" in lineage or not project.params.is_file()
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    from pipeline.inference import load_mlflow_model

    loaded = load_mlflow_model(record["run_model_uri"])
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, saved["state_dict"][key]), key
    assert set(loaded.state_dict()) == set(saved["state_dict"])

    # model.pt holds what fusion needs; the checkpoint what resuming needs (the whole VGG-19)
    lean = set(CoCoNet("random", fusion_only=True).state_dict())
    assert set(saved["state_dict"]) == lean
    resumable = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert set(resumable["model"]) == set(CoCoNet("random").state_dict())
    assert any(is_contrast_only(key) for key in resumable["model"])


@pytest.mark.parametrize("ema_decay", [None, 0.5], ids=["last-weights", "weight-average"])
def test_resume_after_crash_matches_uninterrupted_run(
    project, tiny_params, tmp_path_factory, monkeypatch, ema_decay
):
    params = tiny_params(ema_decay=ema_decay)
    train.run(params, project)
    straight = model_state(project)
    straight_losses = pd.read_csv(project.loss_csv)

    other = ProjectPaths(tmp_path_factory.mktemp("resumed"))
    (other.root / "data").mkdir()
    shutil.copy(project.patches, other.patches)

    class Crash(RuntimeError):
        pass

    real_save = trainer.save_checkpoint

    def save_then_crash(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Crash("simulated crash after the first checkpoint")

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_crash)
    with pytest.raises(Crash):
        train.run(params, other)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert not other.model.exists()
    crashed = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(other.checkpoints))
    assert crashed["epoch"] == 1 and crashed["phase"] == 1

    record = train.run(params, other)
    resumed = model_state(other)
    assert resumed.keys() == straight.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    pd.testing.assert_frame_equal(pd.read_csv(other.loss_csv), straight_losses)
    assert record["run_id"] == crashed["run_id"]  # the same MLflow run continues

    final = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(other.checkpoints))
    ref = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert final["optimizer"]["state"].keys() == ref["optimizer"]["state"].keys()
    for key, value in final["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(value[name], ref["optimizer"]["state"][key][name])


def test_the_model_is_the_weight_average_when_ema_decay_is_set(project, tiny_params, monkeypatch):
    steps: list[torch.Tensor] = []
    real_step = trainer.Trainer.step

    def step_and_keep(self, batch, phase):
        values = real_step(self, batch, phase)
        steps.append(self.model.out.weight.detach().clone())
        return values

    monkeypatch.setattr(trainer.Trainer, "step", step_and_keep)
    train.run(tiny_params(ema_decay=0.5), project)
    average = steps[0]
    for weights in steps[1:]:  # w_avg <- 0.5 w_avg + 0.5 w, from the first step's weights
        average = 0.5 * average + 0.5 * weights
    saved = model_state(project)["out.weight"]
    assert len(steps) == 4 and not torch.equal(saved, steps[-1])
    torch.testing.assert_close(saved, average)
    last = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert torch.equal(last["model"]["out.weight"], steps[-1])  # resuming needs the raw weights
    assert torch.equal(last["average"]["module.out.weight"], saved)


def test_checkpoint_of_other_params_or_data_is_not_resumed(project, tiny_params, capsys):
    params = tiny_params(phase2_epochs=0)
    first = train.run(params, project)
    capsys.readouterr()
    again = train.run(params, project)  # a complete checkpoint: its finished run stays closed
    assert "completed all" in capsys.readouterr().out and again["run_id"] != first["run_id"]
    expected = checkpoint.fingerprint(params, project.patches, FusionObjective.names)
    state, message = checkpoint.find_resumable(project.checkpoints, expected)
    assert state is not None and "resuming" in message

    other_params = checkpoint.fingerprint(
        tiny_params(phase2_epochs=0, lr=1e-3), project.patches, FusionObjective.names
    )
    state, message = checkpoint.find_resumable(project.checkpoints, other_params)
    assert state is None and "different params" in message

    state, message = checkpoint.find_resumable(project.checkpoints, expected | {"code": "0"})
    assert state is None and "different code" in message  # a changed loss or network

    write_patches(project.patches, seed=1)
    state, message = checkpoint.find_resumable(project.checkpoints, expected | {"patches_md5": "0"})
    assert state is None and "different patches_md5" in message

    capsys.readouterr()
    train.run(params, project)  # new data: trains from scratch
    assert "starting fresh" in capsys.readouterr().out


def test_code_digest_follows_the_training_code(tmp_path):
    for folder in checkpoint.TRAINING_CODE:
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "a.py").write_text("x = 1\n")
    first = checkpoint.code_digest(tmp_path)
    assert checkpoint.code_digest(tmp_path) == first
    (tmp_path / "models" / "a.py").write_text("x = 2\n")
    assert checkpoint.code_digest(tmp_path) != first
    (tmp_path / "models" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("not code")  # outside the training code: no change
    assert checkpoint.code_digest(tmp_path) == first


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    trainer.seed_everything(3)
    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    checkpoint.save_checkpoint(tmp_path, 1, {"rng": [state]})
    checkpoint.set_rng_state(checkpoint.load_checkpoint(tmp_path / "epoch_001.pt")["rng"][0])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_missing_patches_file_is_a_clear_error(tmp_path, tiny_params):
    with pytest.raises(FileNotFoundError, match="no patches file; run the patches stage"):
        train.run(tiny_params(), ProjectPaths(tmp_path))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params().model_dump(mode="json", by_alias=True)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.stages.train",
            "--params",
            params_file,
            "--root",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and "patches.h5: no patches file" in result.stderr
    assert not (tmp_path / "artifacts" / "model.pt").exists()


def test_two_process_ddp_on_cpu(project, mlflow_store, tiny_params):
    """torchrun with two gloo processes: one run, rank 0's outputs, both ranks' RNG saved."""
    params_file = project.root / "params.yaml"
    params = tiny_params(phase1_epochs=1, phase2_epochs=1)
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "pipeline.stages.train",
        "--params",
        str(params_file),
        "--root",
        str(project.root),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(project.run_info.read_text())
    # 8 patches over 2 ranks at 2 per rank: 2 steps per epoch, capped at 2
    assert pd.read_csv(project.loss_csv)["step"].tolist() == [1, 2, 3, 4]
    final = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert len(final["rng"]) == 2
    assert not torch.equal(final["rng"][0]["torch"], final["rng"][1]["torch"])

    import mlflow

    mlflow.set_tracking_uri(mlflow_store)
    tags = mlflow.get_run(record["run_id"]).data.tags
    assert tags["placement.world_size"] == "2"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_mixed_precision(project, tiny_params):
    record = train.run(tiny_params(), project)
    assert record is not None
    losses = pd.read_csv(project.loss_csv)
    assert np.isfinite(losses[list(FusionObjective.names)].to_numpy()).all()
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert "cuda" in state["rng"][0]
    assert all(v.device.type == "cpu" for v in model_state(project).values())


# --- a run killed before its first checkpoint; a params file without the train section ------

KILLED_TRAINING = """
import os, signal, sys
from pathlib import Path
import yaml
import torch
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.placement import place
from pipeline.tracking.training_run import RunTracker
params = Params.model_validate(yaml.safe_load(Path(sys.argv[1]).read_text()))
tracker = RunTracker(params, ProjectPaths(Path(sys.argv[2])), place("cpu"))
tracker.start("digest")
print(tracker.run_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # killed before the first checkpoint
"""


def test_run_killed_before_its_first_checkpoint_is_marked_killed(
    project, tiny_params, mlflow_store, tmp_path_factory
):
    import socket

    import mlflow

    params = tiny_params(phase2_epochs=0)
    params_file = tmp_path_factory.mktemp("params") / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json", by_alias=True)))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store}
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_TRAINING, str(params_file), str(project.root)],
        capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    stale = killed.stdout.split()[0]
    assert mlflow.get_run(stale).info.status == "RUNNING"

    client = mlflow.MlflowClient()
    experiment = mlflow.get_experiment_by_name(params.tracking.experiment).experiment_id
    elsewhere = client.create_run(experiment, tags={"project_root": "/some/other/checkout"})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        live = client.create_run(
            experiment,
            tags={
                "project_root": str(project.root.resolve()),
                "train_host": socket.gethostname(),
                "train_pid": str(sleeper.pid),
            },
        )
        record = train.run(params, project)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert mlflow.get_run(stale).info.status == "KILLED"
    assert mlflow.get_run(record["run_id"]).info.status == "FINISHED"
    assert mlflow.get_run(elsewhere.info.run_id).info.status == "RUNNING"  # another checkout's
    assert mlflow.get_run(live.info.run_id).info.status == "RUNNING"  # its process still runs


def test_params_file_without_the_stage_section_is_refused(tmp_path, tiny_params, capsys):
    from pipeline.core.params import ParamsError, load_params
    from pipeline.core.stage import stage_main
    from pipeline.stages import patches

    sections = tiny_params().model_dump(mode="json", by_alias=True)
    for section in ("train", "patches"):
        del sections[section]
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(sections))
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.stages.train", "--params", params_file,
         "--root", tmp_path],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"error: {params_file}: no 'train' section" in result.stderr, result.stderr
    assert not (tmp_path / "artifacts").exists()

    with pytest.raises(SystemExit) as exit_info:  # every stage requires its own section
        stage_main(patches.run, "patches", ["--params", str(params_file), "--root", str(tmp_path)])
    assert exit_info.value.code == 1
    assert f"{params_file}: no 'patches' section" in capsys.readouterr().err
    assert load_params(params_file).evaluate.convention == "matlab"  # other sections: defaults
    with pytest.raises(ParamsError, match="no 'train' section"):
        load_params(params_file, require=["train"])


def test_the_network_is_fed_and_read_on_its_signed_scale(tiny_params):
    """Training feeds the network [-1, 1] inputs (as the official code and inference do) and
    reads its tanh output back to [0, 1] for the losses."""
    batch = torch.zeros(4, 3, 32, 32)
    batch[:, 1] = 1.0  # visible black, infrared white
    net = trainer.Trainer(tiny_params(), batch, Runtime(CPU_FP32))
    seen = []

    def spy(module, args):
        seen.append([float(a.min()) for a in args] + [float(a.max()) for a in args])

    net.model.register_forward_pre_hook(spy)
    losses = net.step(batch, phase=1)
    vis_min, ir_min, vis_max, ir_max = seen[0]
    assert (vis_min, vis_max, ir_min, ir_max) == (-1.0, -1.0, 1.0, 1.0)
    assert torch.isfinite(losses).all()


OFFICIAL_FILE = PROJECT_ROOT.parent / "shared" / "official_coconet" / "latest.pth"


@pytest.mark.skipif(not OFFICIAL_FILE.is_file(), reason=f"no official checkpoint {OFFICIAL_FILE}")
def test_fine_tuning_starts_from_a_converted_official_checkpoint(tmp_path, tiny_params):
    """train.init_from: every tensor from the file except the VGG layers it lacks, which keep
    model.vgg_weights."""
    from models.official import save_converted

    converted = tmp_path / "official.pt"
    save_converted(OFFICIAL_FILE, converted, vgg_weights="random")
    file_state = torch.load(converted, weights_only=True)["state_dict"]
    torch.manual_seed(1)
    batch = torch.rand(4, 3, 32, 32)
    net = trainer.Trainer(tiny_params(init_from=str(converted)), batch, Runtime(CPU_FP32))
    state = net.model.state_dict()
    assert torch.equal(state["mam8.attention.gamma"], file_state["mam8.attention.gamma"])
    assert torch.equal(state["vgg.features.0.weight"], file_state["vgg.features.0.weight"])
    deep = "vgg.features.{}.weight".format(trainer.vgg_keys(["conv5_1"])[0].split(".")[2])
    assert deep not in file_state  # a lean file: conv4_1 .. come from model.vgg_weights
    assert deep in state and torch.isfinite(state[deep]).all()


def test_fine_tuning_from_a_lean_model_file_keeps_the_deep_vgg_of_the_params(tmp_path, tiny_params):
    """A fusion model file lacks conv4_1 .. conv5_4: fine-tuning takes them from
    model.vgg_weights, every other tensor from the file."""
    from pipeline.training.outputs import write_model_file

    torch.manual_seed(7)
    source = CoCoNet(vgg_weights="random")
    lean = tmp_path / "model.pt"
    write_model_file(lean, source, {"vgg_weights": "random", "params": {}})
    file_state = torch.load(lean, weights_only=True)["state_dict"]
    batch = torch.rand(4, 3, 32, 32)
    net = trainer.Trainer(tiny_params(init_from=str(lean)), batch, Runtime(CPU_FP32))
    state = net.model.state_dict()
    for key, value in file_state.items():
        assert torch.equal(state[key], value), key
    deep = [key for key in state if is_contrast_only(key)]
    assert deep and not any(key in file_state for key in deep)
    assert not torch.equal(state[deep[0]], source.state_dict()[deep[0]])  # from the params


def test_the_output_contrast_of_the_params_is_in_both_model_files(project, tiny_params):
    from models.contrast import OutputContrast
    from pipeline.inference import load_checkpoint_model, load_mlflow_model

    params = tiny_params()
    params.model.output_mean, params.model.output_sd = 0.4, 0.2
    record = train.run(params, project)
    saved = torch.load(project.model, weights_only=True)
    assert saved["output_contrast"] == {"mean": 0.4, "sd": 0.2}
    expected = OutputContrast(0.4, 0.2)
    assert load_checkpoint_model(project.model).output_contrast == expected
    assert load_mlflow_model(record["run_model_uri"]).output_contrast == expected


class ObjectiveWithTotalVariation(FusionObjective):
    """A new loss term, added the way the objective's docstring says: in the objective only."""

    names = (*FusionObjective.names, "tv")

    def forward(self, fused, vis, ir, mask, phase, autocast=None):
        terms = super().forward(fused, vis, ir, mask, phase, autocast or contextlib.nullcontext)
        tv = (fused[..., 1:, :] - fused[..., :-1, :]).abs().mean()
        terms["loss"] = terms["loss"] + 0.1 * tv
        return {**terms, "tv": tv}


def test_a_new_objective_term_reaches_every_record(project, tiny_params, monkeypatch):
    """A term added to the objective alone shows up in the loss CSV, the MLflow metrics and the
    checkpoint history; nothing else names the terms."""
    import mlflow

    monkeypatch.setattr(
        trainer,
        "build_objective",
        lambda model, train: ObjectiveWithTotalVariation(model.vgg, train.contrast_weight),
    )
    record = train.run(tiny_params(), project)
    losses = pd.read_csv(project.loss_csv)
    assert list(losses.columns) == ["step", "epoch", "phase", *ObjectiveWithTotalVariation.names]
    assert (losses["tv"] > 0).all()
    metrics = mlflow.get_run(record["run_id"]).data.metrics
    assert "train/tv" in metrics and "train_epoch/tv" in metrics
    state = checkpoint.load_checkpoint(checkpoint.latest_checkpoint(project.checkpoints))
    assert state["history"].shape[1] == 3 + len(ObjectiveWithTotalVariation.names)
    assert state["fingerprint"]["terms"].endswith(",tv")
