"""Every name the project writes to MLflow: tags, metric keys, artifact paths, one place each.

One fact, one name: a value is recorded once, on the entity it describes. The training run
holds what produced the weights (params, code version, placement, the data it read), the
evaluation run what the weights scored, the model version only what the registry decided
and what ties the version to those two runs. Metric keys group in the UI by the part before
their last ``/`` (``train/loss``, ``eval/CoCoNet/VIF``).
"""

from __future__ import annotations

# --- experiment ---------------------------------------------------------------------------
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's own: the UI's "Machine learning" kind
EXPERIMENT_KIND_VALUE = "custom_model_development"

# --- the training run ---------------------------------------------------------------------
GIT_COMMIT = "mlflow.source.git.commit"  # MLflow's own tag for the code version
GIT_DIRTY = "git.dirty"  # "true" when tracked files other than dvc.lock had changes
TRAIN_DIGEST = "train_params.sha256"  # sha256 of the train and model sections (the weights)
DEVICE = "placement.device"  # where it ran, resolved (the params say what was asked)
PRECISION = "placement.precision"
WORLD_SIZE = "placement.world_size"
OWNER_ROOT, OWNER_HOST, OWNER_PID = "owner.root", "owner.host", "owner.pid"
RESUMED_FROM = "resumed_from_epoch"
FAILURE = "failure"  # why a run was marked FAILED
KILLED_REASON = "killed_reason"  # why a run was marked KILLED
TRACKING_GAP = "tracking_gap"  # the store was lost mid-training; metrics logged afterwards
RUN_KIND = "coconet.run"  # "training" or "evaluation"
LINEAGE_ARTIFACTS = "lineage"  # raw_index.csv, masks_index.csv, dvc.lock, params.yaml
MODEL_ARTIFACT = "model"
TRAINING_ARTIFACTS = "training"  # train_loss.csv


def step_metric(term: str) -> str:
    """A loss term per logged step: ``train/loss``."""
    return f"train/{term}"


def epoch_metric(name: str) -> str:
    """A per-epoch value: ``train_epoch/loss``, ``train_epoch/patches_per_s``."""
    return f"train_epoch/{name}"


# --- the evaluation run ---------------------------------------------------------------------
EVAL_SPLIT_FINGERPRINT = "eval.test_fingerprint"  # also on the version: comparability
EVAL_ARTIFACTS = "evaluation"  # report.md, per_image.csv, fused/, summary.json
EVAL_TABLE = "evaluation/per_image.json"  # the per-image scores as an MLflow table
TEST_SPLIT = "test split"  # the dataset input's name


def eval_metric(method: str, metric: str) -> str:
    """A method's mean on the test split: ``eval/CoCoNet/VIF``, ``eval/average/VIF``."""
    return f"eval/{method}/{metric}"


def gallery_key(pair: str) -> str:
    """The gallery strip of one test pair as an MLflow image: ``gallery/<pair>``."""
    return f"gallery/{pair}"


# --- the model version ----------------------------------------------------------------------
EVAL_RUN = "eval.run_id"  # the evaluation its promotion decision used
PARAMS_DIGEST = "params.sha256"  # sha256 of every params section at registration
DVC_HASHES = "dvc.lock"  # JSON {stage: {path: md5}} of the upstream outputs
DATA_PAIRS = "data.pairs"  # JSON {dataset: {split: pairs}}
DECISION = "promotion.decision"
REASON = "promotion.reason"
COMPARED_TO = "promotion.compared_to"
