"""Every path a stage or flow reads or writes, relative to one project root (mirrors dvc.yaml)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    """The project's files under ``root``: inputs, stage outputs, tracking stores and the inbox."""

    root: Path

    # --- download ---------------------------------------------------------------------------
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def raw(self) -> Path:
        return self.data / "raw"

    @property
    def index(self) -> Path:
        return self.raw / "index.csv"

    @property
    def published_index(self) -> Path:
        return self.raw / "published.csv"

    @property
    def weights(self) -> Path:
        return self.data / "weights"

    @property
    def official_model(self) -> Path:
        """The authors' trained model, converted by the download stage (download.official)."""
        return self.weights / "coconet_official.pt"

    # --- masks ------------------------------------------------------------------------------
    @property
    def masks(self) -> Path:
        return self.data / "masks"

    @property
    def masks_index(self) -> Path:
        return self.masks / "index.csv"

    @property
    def masks_report(self) -> Path:
        return self.reports / "masks.json"

    @property
    def masks_summary(self) -> Path:
        return self.reports / "masks_summary.json"

    @property
    def masks_per_image(self) -> Path:
        return self.reports / "masks_per_image.csv"

    @property
    def masks_preview(self) -> Path:
        return self.reports / "masks_preview.png"

    # --- patches ----------------------------------------------------------------------------
    @property
    def patches(self) -> Path:
        return self.data / "patches.h5"

    @property
    def patches_report(self) -> Path:
        return self.reports / "patches.json"

    # --- train ------------------------------------------------------------------------------
    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def checkpoints(self) -> Path:
        return self.artifacts / "checkpoints"

    @property
    def model(self) -> Path:
        return self.artifacts / "model.pt"

    @property
    def run_info(self) -> Path:
        return self.artifacts / "train_run.json"

    @property
    def loss_csv(self) -> Path:
        return self.reports / "train_loss.csv"

    # --- evaluate ---------------------------------------------------------------------------
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def evaluation(self) -> Path:
        return self.reports / "evaluation"

    @property
    def metrics(self) -> Path:
        return self.reports / "metrics.json"

    @property
    def comparison(self) -> Path:
        return self.reports / "comparison.json"

    @property
    def evaluation_run(self) -> Path:
        return self.reports / "evaluation_run.json"

    # --- register ---------------------------------------------------------------------------
    @property
    def registered(self) -> Path:
        return self.artifacts / "registered.json"

    # --- project files ----------------------------------------------------------------------
    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def dvc_lock(self) -> Path:
        return self.root / "dvc.lock"

    @property
    def dvc_tmp(self) -> Path:
        return self.root / ".dvc" / "tmp"

    @property
    def catalogue_datasets(self) -> Path:
        return self.root / "pipeline" / "catalogue" / "datasets"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"
