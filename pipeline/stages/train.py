"""The train stage: CoCoNet's two-phase schedule on the patches, tracked in MLflow.

Phase 1 trains with the adaptive fusion loss only; phase 2 continues from phase 1's weights
and optimiser state with the coupled contrastive loss added. Every number comes from the
``train`` and ``model`` sections of ``params.yaml``. A checkpoint after every epoch lets a
stopped run resume to the same weights. ``torchrun --nproc_per_node=N -m pipeline.stages.train``
trains data-parallel with no code change (rank 0 tracks and saves).

Outputs: ``artifacts/model.pt``, ``artifacts/train_run.json``, ``reports/train_loss.csv`` and an
MLflow run with params, losses, data inputs and the model. ``artifacts/checkpoints/`` is the
local resume state, not a DVC output: it stays on the machine that trained and never travels
through a DVC remote.

A non-finite loss or gradient stops training with an error naming the step: the run is marked
FAILED and nothing from that state is saved (the last epoch's checkpoint stays). A run left
RUNNING by a killed training of this project is marked KILLED when the next one starts.
``params.yaml`` must hold a ``train`` section.
"""

from __future__ import annotations

from typing import Any

from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.training.trainer import train_model


def run(params: Params, paths: ProjectPaths, device: str | None = None) -> dict[str, Any] | None:
    """Run (or resume) the two-phase training on ``device`` (default: ``train.device``);
    returns the run record on rank 0."""
    return train_model(params, paths, device)


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
