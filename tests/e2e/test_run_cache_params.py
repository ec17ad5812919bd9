"""DVC counts every param: a changed patch side re-runs the patches stage (slow).

DVC's run cache leaves keys named ``size`` or ``nfiles`` out of a stage's hash, so a param of
that name could bring back outputs made with another value while ``dvc.lock`` records the new
one. The patch side is ``patches.patch_size``; this runs the real stages on a tiny copy.
"""

from __future__ import annotations

import subprocess

import h5py
import pytest
import yaml

from tests.helpers.mirror import mirror_dir
from tests.helpers.tiny_project import make_tiny_project, project_env

pytestmark = pytest.mark.slow


def _repro(root, env) -> str:
    run = subprocess.run(
        ["dvc", "repro", "patches"], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


def _set_patch_side(root, side: int) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["patches"]["patch_size"] = side
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _recorded(root) -> tuple[int, int]:
    """(the side dvc.lock records for the patches stage, the side of the patches on disk)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    with h5py.File(root / "data/patches.h5", "r") as h5:
        on_disk = int(h5.attrs["patch_size"])
    return lock["stages"]["patches"]["params"]["params.yaml"]["patches"]["patch_size"], on_disk


def test_a_changed_patch_side_reruns_patches(tmp_path):
    if mirror_dir() is None:
        pytest.skip("public data mirror not found (../shared/mirror or COCONET_MIRROR)")
    root = make_tiny_project(tmp_path / "tiny", test_pairs=1, train_pairs=2)
    env = project_env(root, tmp_path / "cache")
    _repro(root, env)
    assert _recorded(root) == (32, 32)
    _set_patch_side(root, 48)
    assert "Running stage 'patches'" in _repro(root, env)
    assert _recorded(root) == (48, 48)
    _set_patch_side(root, 32)  # back: DVC may restore the first outputs, never the 48-px ones
    _repro(root, env)
    assert _recorded(root) == (32, 32)
