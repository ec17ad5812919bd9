"""Where the stages read and write, relative to one project root (mirrors dvc.yaml's outs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    """Every file the train and evaluate stages read or write, under ``root``."""

    root: Path

    @property
    def index(self) -> Path:
        return self.root / "data" / "raw" / "index.csv"

    @property
    def patches(self) -> Path:
        return self.root / "data" / "patches.h5"

    @property
    def checkpoints(self) -> Path:
        return self.root / "artifacts" / "checkpoints"

    @property
    def model(self) -> Path:
        return self.root / "artifacts" / "model.pt"

    @property
    def run_info(self) -> Path:
        return self.root / "artifacts" / "train_run.json"

    @property
    def loss_csv(self) -> Path:
        return self.root / "reports" / "train_loss.csv"

    @property
    def evaluation(self) -> Path:
        return self.root / "reports" / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.root / "reports" / "metrics.json"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"
