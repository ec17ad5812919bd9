"""A diverging training stops at the first non-finite loss or gradient, saves nothing from that
state and fails its MLflow run; a checkpoint with non-finite weights is refused by the loader
that ``coconet fuse`` and the evaluate stage share."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.losses import AdaptiveFusionLoss
from models.objective import TOTAL, FusionObjective
from pipeline.cli import app
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import write_image
from pipeline.core.paths import ProjectPaths
from pipeline.inference import ModelLoadError, load_fusion_model
from pipeline.stages import train
from pipeline.training import checkpoint, trainer
from tests.helpers.models import CPU_FP32
from tests.helpers.patches import write_patches


@pytest.fixture
def project(tmp_path, tracking_env):
    write_patches(tmp_path / "data" / "patches.h5")
    return ProjectPaths(tmp_path)


def _latest_run(experiment: str):
    import mlflow

    return mlflow.search_runs(
        experiment_names=[experiment], order_by=["start_time DESC"], output_format="list"
    )[0]


def test_huge_learning_rate_stops_at_the_first_nan_loss(project, tiny_params):
    params = tiny_params(lr=1e8, phase1_epochs=2, phase2_epochs=1)
    with pytest.raises(CoconetError) as caught:  # the stage prints it as one error line
        train.run(params, project)
    message = str(caught.value)
    assert "non-finite loss (nan) at step 2 (epoch 1/3, phase 1)" in message
    assert "\n" not in message
    assert not project.model.exists() and not project.run_info.exists()
    assert checkpoint.latest_checkpoint(project.checkpoints) is None  # no epoch finished
    run = _latest_run(params.tracking.experiment)
    assert run.info.status == "FAILED"
    assert "step 2" in run.data.tags["failure"]


def test_nan_gradient_keeps_the_last_good_checkpoint(project, tiny_params, monkeypatch):
    """A finite loss whose gradient is NaN (from step 3, in epoch 2) stops the run there."""
    real_terms = AdaptiveFusionLoss.terms
    calls = {"n": 0}

    def terms_with_nan_gradient(self, fused, vis, ir):
        calls["n"] += 1
        terms = real_terms(self, fused, vis, ir)
        if calls["n"] >= 3:  # 0 * sqrt(0): the value stays 0, its gradient is 0 * inf = NaN
            zero = (fused - fused.detach()).abs().sum()
            terms["mse"] = terms["mse"] + 0.0 * torch.sqrt(zero)
        return terms

    monkeypatch.setattr(AdaptiveFusionLoss, "terms", terms_with_nan_gradient)
    params = tiny_params(phase1_epochs=2, phase2_epochs=0)
    with pytest.raises(CoconetError, match="gradient") as caught:
        train.run(params, project)
    kept = checkpoint.checkpoint_path(project.checkpoints, 1)
    assert "non-finite gradient (nan) at step 3 (epoch 2/2, phase 1)" in str(caught.value)
    assert str(kept) in str(caught.value)
    assert sorted(project.checkpoints.iterdir()) == [kept]  # epoch 1's, not the bad state
    state = checkpoint.load_checkpoint(kept)
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not project.model.exists()
    assert _latest_run(params.tracking.experiment).info.status == "FAILED"


def test_check_step_finite_passes_finite_values_and_names_the_step():
    terms = FusionObjective.names
    trainer.check_step_finite(torch.ones(6), terms, 1, 1, 2, 1, None)
    values = torch.tensor([1.0, 1.0, 0.0, 0.5, 0.5, float("inf")])
    with pytest.raises(trainer.TrainingDivergedError, match=r"gradient \(inf\) at step 7 "):
        trainer.check_step_finite(values, terms, 7, 2, 2, 2, None)
    values = torch.tensor([float("nan"), float("inf"), 1.0])  # the total by name, not position
    with pytest.raises(trainer.TrainingDivergedError, match=r"loss \(inf\) at step 3 "):
        trainer.check_step_finite(values, ("adaptive", TOTAL), 3, 1, 2, 1, None)


@pytest.fixture
def nan_checkpoint(random_model, tmp_path):
    state = {k: v.clone() for k, v in random_model.state_dict().items()}
    name = next(k for k in state if k.startswith("decoder") or not k.startswith("vgg"))
    state[name].view(-1)[0] = float("nan")
    path = tmp_path / "diverged.pt"
    torch.save({"state_dict": state, "vgg_weights": "random"}, path)
    return path, name


def test_loader_refuses_non_finite_weights(nan_checkpoint):
    path, name = nan_checkpoint
    with pytest.raises(ModelLoadError, match=f"{path}: non-finite weights .* in {name}"):
        load_fusion_model(str(path), CPU_FP32)  # what the evaluate stage calls


def test_fuse_refuses_non_finite_weights_instead_of_writing_black(nan_checkpoint, tmp_path):
    path, name = nan_checkpoint
    rng = np.random.default_rng(0)
    ir, vis, out = tmp_path / "ir.png", tmp_path / "vis.png", tmp_path / "fused.png"
    write_image(ir, rng.random((16, 16), dtype=np.float32))
    write_image(vis, rng.random((16, 16), dtype=np.float32))
    argv = ["fuse", "--ir", ir, "--vis", vis, "-o", out, "--model", path, "--device", "cpu"]
    result = CliRunner().invoke(app, [str(a) for a in argv])
    assert result.exit_code == 1, result.output
    assert f"error: {path}: non-finite weights" in result.output and name in result.output
    assert not out.exists()
