"""Shared fixtures: the public data mirror, a random-VGG CoCoNet and a checkpoint made from it,
one MLflow store per module and the tiny (CPU, few steps) params the training tests run with."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.core.params import PROJECT_ROOT, Params
from tests.helpers.mirror import TNO_DIR, mirror_dir


@pytest.fixture(autouse=True)
def _collector_unfrozen() -> Iterator[None]:
    """``coconet fuse`` freezes the cycle collector's objects, as a one-shot process may
    (``pipeline.core.heap``); run in the long-lived test process, it is undone after each test."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def mirror_root() -> Path:
    """The public data mirror (``../shared/mirror``, or ``$COCONET_MIRROR``); skip if absent."""
    root = mirror_dir()
    if root is None:
        pytest.skip(f"public data mirror not found at {PROJECT_ROOT.parent / 'shared/mirror'}")
    return root


@pytest.fixture(scope="session")
def tno_pair(mirror_root: Path) -> tuple[Path, Path]:
    """(infrared, visible) paths of TNO pair 36 (359x247, an odd size) from the mirror."""
    folder = mirror_root / TNO_DIR
    ir, vis = folder / "IR36.bmp", folder / "VIS36.bmp"
    if not (ir.is_file() and vis.is_file()):
        pytest.skip(f"TNO test pair 36 not in the mirror ({folder})")
    return ir, vis


@pytest.fixture(scope="session")
def random_model():
    """A CoCoNet with random (seeded) VGG-19 and network weights, in eval mode."""
    from models.coconet import CoCoNet

    torch.manual_seed(0)
    return CoCoNet(vgg_weights="random").eval()


@pytest.fixture(scope="session")
def model_checkpoint(random_model, tmp_path_factory) -> Path:
    """``random_model`` saved in the ``artifacts/model.pt`` format."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(
        {"state_dict": random_model.state_dict(), "vgg_weights": "random", "params": {}}, path
    )
    return path


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """A SQLite MLflow tracking URI, one per test module (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def tracking_env(mlflow_store: str, monkeypatch) -> str:
    """``mlflow_store`` set as ``MLFLOW_TRACKING_URI`` for this test (what the stages read)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    return mlflow_store


def make_tiny_params(**train_overrides) -> Params:
    """Params for tests: random VGG, on the CPU, batch 4, one epoch per phase of at most 2
    steps."""
    return Params.model_validate(
        {
            "model": {"vgg_weights": "random"},
            "tracking": {"experiment": "test-train"},
            "train": {
                "batch_size": 4,
                "phase1_epochs": 1,
                "phase2_epochs": 1,
                "max_steps_per_epoch": 2,
                "log_every": 1,
                "device": "cpu",
                **train_overrides,
            },
        }
    )


@pytest.fixture
def tiny_params():
    """:func:`make_tiny_params`, as a fixture: call it with train overrides."""
    return make_tiny_params
