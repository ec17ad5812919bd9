"""``coconet run -S``: params.yaml composed from conf/ as ``dvc exp run -S`` does
(flows.overrides)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from flows.overrides import compose_params
from pipeline.core.params import PROJECT_ROOT, ParamsError, load_params


@pytest.fixture
def project(tmp_path):
    """A git + DVC project holding this project's conf/, .dvc/config and params.yaml."""
    root = tmp_path / "p"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf")
    shutil.copyfile(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")
    shutil.copyfile(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    return root


def test_composes_exactly_as_dvc_exp_run_does(project, tmp_path):
    from dvc.utils.hydra import compose_and_dump

    overrides = ["schedule=quick", "train.lr=0.002", "download.datasets=[tno40]"]
    applied = compose_params(project, overrides)
    assert applied == {"schedule": "quick", "train.lr": "0.002", "download.datasets": "[tno40]"}
    reference = tmp_path / "reference.yaml"  # DVC's own call with the same overrides
    compose_and_dump(reference, str(project / "conf"), None, "config", str(project), overrides)
    assert (project / "params.yaml").read_text() == reference.read_text()
    loaded = load_params(project / "params.yaml")
    assert loaded.train.lr == 0.002 and loaded.train.max_steps_per_epoch == 10  # quick
    compose_params(project, ["train.lr=0.003"])  # recomposed: back to the paper schedule
    assert load_params(project / "params.yaml").train.max_steps_per_epoch is None


@pytest.mark.parametrize("bad", ["train.batch_size=-3", "nosection.key=1", "novalue", "train.lr"])
def test_a_refused_override_leaves_params_as_they_were(project, bad):
    before = (project / "params.yaml").read_text()
    with pytest.raises(ParamsError, match="-S "):
        compose_params(project, [bad])
    assert (project / "params.yaml").read_text() == before
