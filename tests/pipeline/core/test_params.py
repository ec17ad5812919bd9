"""params.yaml: the committed defaults validate, bad values are named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from pipeline.core.params import PARAMS_FILE, PROJECT_ROOT, Params, ParamsError, load_params


def committed_params_file(tmp_path) -> Path:
    """params.yaml as committed (HEAD), not as a quick run's ``dvc exp run -S`` left it."""
    shown = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    if shown.returncode != 0:
        return PARAMS_FILE  # not a git checkout: the file as it is
    path = tmp_path / "params.yaml"
    path.write_text(shown.stdout)
    return path


def test_workspace_params_are_valid():
    load_params(PARAMS_FILE)


def test_committed_params_follow_the_paper(tmp_path):
    params = load_params(committed_params_file(tmp_path))
    assert params.train.phase1_epochs == 30
    assert params.train.phase2_epochs == 2
    assert params.train.batch_size == 30
    assert params.train.lr == pytest.approx(1e-4)
    assert params.patches.patch_size == 64
    # the adaptive loss and SSIM of the official code
    assert (params.train.c1, params.train.c2) == (0.5, 0.75)
    assert params.train.ssim_weight == 20.0
    assert (params.train.ssim_window, params.train.ssim_sigma) == (11, 1.5)
    assert params.train.contrastive_mode == "batch" and params.train.mse_range == "network"
    assert params.train.ssim_padding == "zeros" and params.train.ssim_reduction == "batch"
    assert params.train.gradient_padding == "zeros"
    assert params.train.detail_weight == 0  # the paper's loss has no detail term
    assert params.train.ema_decay is None  # the model is the last step's weights
    assert params.model.output_mean is None and params.model.output_sd is None


@pytest.mark.parametrize(
    ("section", "key", "value", "match"),
    [
        ("train", "batch_size", 0, r"params.yaml: invalid params(.|\n)*batch_size"),
        ("model", "output_mean", 0.4, "output_mean and model.output_sd go together"),
        ("train", "learning_rate", 1.0, "learning_rate"),  # an unknown key
    ],
    ids=["invalid value", "output mean without sd", "unknown key"],
)
def test_bad_params_are_refused_naming_the_file_and_key(tmp_path, section, key, value, match):
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    raw[section][key] = value
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ParamsError, match=match):
        load_params(bad)


def test_digest_changes_with_any_value():
    params = load_params(PARAMS_FILE)
    changed = params.model_copy(deep=True)
    changed.train.seed += 1
    assert params.digest() != changed.digest()


def test_schema_defaults_equal_the_committed_params(tmp_path):
    """pipeline/core/params.py and params.yaml state the same defaults (no silent second copy)."""
    committed = load_params(committed_params_file(tmp_path))
    assert Params().model_dump(by_alias=True) == committed.model_dump(by_alias=True)


def compose(schedule: str, tmp_path: Path) -> dict:
    """params.yaml as ``dvc exp run -S schedule=<name>`` composes it from conf/ (DVC's Hydra)."""
    from dvc.utils.hydra import compose_and_dump

    out = tmp_path / f"{schedule}.yaml"
    compose_and_dump(out, str(PROJECT_ROOT / "conf"), None, "config", "", [f"schedule={schedule}"])
    return yaml.safe_load(out.read_text())


def test_committed_params_are_the_composed_paper_schedule(tmp_path):
    committed = yaml.safe_load(committed_params_file(tmp_path).read_text())
    assert compose("paper", tmp_path) == committed


@pytest.mark.parametrize("schedule", ["paper", "cpu", "quick"])
def test_every_schedule_composes_to_valid_params(schedule, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(compose(schedule, tmp_path)))
    params = load_params(path)
    if schedule != "paper":  # the offline schedules need no network
        assert params.download.vgg19 == params.download.sam == params.download.official == "none"
        assert params.model.vgg_weights == "random" and params.masks.method == "ir_saliency"


def test_dvc_composes_params_with_hydra():
    config = (PROJECT_ROOT / ".dvc" / "config").read_text()
    assert "[hydra]" in config and "enabled = true" in config


RUN_CACHE_IGNORED = {"size", "nfiles"}  # DVC's run cache leaves keys of these names out


def keys(tree, prefix=""):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield f"{prefix}{key}"
            yield from keys(value, f"{prefix}{key}.")


def test_no_param_is_named_what_dvc_run_cache_ignores():
    """DVC hashes a stage for its run cache without any key named size or nfiles (treeverse/dvc
    #10296): such a param could change and the stage still be restored from the cache."""
    for path in (PROJECT_ROOT / "params.yaml", *sorted((PROJECT_ROOT / "conf").rglob("*.yaml"))):
        named = {k for k in keys(yaml.safe_load(path.read_text()) or {})}
        clash = sorted(k for k in named if k.rsplit(".", 1)[-1] in RUN_CACHE_IGNORED)
        assert clash == [], f"{path}: rename {clash}"
    schema = {k for k in keys(Params().model_dump(by_alias=True))}
    assert not {k for k in schema if k.rsplit(".", 1)[-1] in RUN_CACHE_IGNORED}
