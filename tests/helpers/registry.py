"""Helpers shared by the register/lineage/flow tests: a fake project tree (indexes, dvc.lock,
metrics) and, in a throwaway MLflow store, a training run with a model logged in the registry
format (safetensors + JSON config, :mod:`pipeline.tracking.pyfunc_model`) and its lineage files,
and an evaluation run of it, as the train and evaluate stages record them."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import torch
import yaml

from pipeline.catalogue.index import read_index
from pipeline.core.params import Params
from pipeline.evaluation.promotion import evaluation_fingerprint
from pipeline.tracking import names, pyfunc_model

TEST_SET = "tno40"
RAW_COLUMNS = [
    *("pair_id", "dataset", "pair", "split", "width", "height", "ir", "vis", "mask"),
    *("ir_url", "vis_url", "mask_url", "ir_sha256", "vis_sha256", "mask_sha256"),
]


def write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def make_project(root: Path, metrics: dict[str, float], test_salt: str = "") -> Path:
    """Write data/raw/index.csv, data/masks/index.csv, dvc.lock, params.yaml, metrics.json.

    ``test_salt`` changes the test images' sha256 (a different test split)."""
    raw, masks = [], []
    for dataset, split, n in (("tno40", "test", 3), ("tno_masked", "train", 2)):
        for i in range(n):
            pair = f"p{i}"
            salt = test_salt if split == "test" else ""
            raw.append(
                {
                    "pair_id": f"{dataset}/{pair}",
                    "dataset": dataset,
                    "pair": pair,
                    "split": split,
                    "width": 8,
                    "height": 8,
                    "ir": f"data/raw/{dataset}/ir/{pair}.png",
                    "vis": f"data/raw/{dataset}/vis/{pair}.png",
                    "mask": "",
                    "ir_url": f"https://example.org/{dataset}/ir/{pair}.bmp",
                    "vis_url": f"https://example.org/{dataset}/vis/{pair}.bmp",
                    "mask_url": "",
                    "ir_sha256": hashlib.sha256(f"ir{dataset}{pair}{salt}".encode()).hexdigest(),
                    "vis_sha256": hashlib.sha256(f"vi{dataset}{pair}{salt}".encode()).hexdigest(),
                    "mask_sha256": "",
                }
            )
            if split == "train":
                masks.append(
                    {
                        "pair_id": f"{dataset}/{pair}",
                        "mask": f"data/masks/{dataset}/{pair}.png",
                        "method": "ir_saliency",
                    }
                )
    write_csv(root / "data/raw/index.csv", RAW_COLUMNS, raw)
    write_csv(root / "data/masks/index.csv", ["pair_id", "mask", "method"], masks)
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"outs": [{"path": "data/raw", "md5": "a" * 32 + ".dir"}]},
            "masks": {"outs": [{"path": "data/masks", "md5": "b" * 32 + ".dir"}]},
            "patches": {"outs": [{"path": "data/patches.h5", "md5": "c" * 32}]},
            "train": {"outs": [{"path": "artifacts/model.pt", "md5": "d" * 32}]},
            "evaluate": {"outs": [{"path": "reports/metrics.json", "md5": "e" * 32}]},
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    (root / "params.yaml").write_text("model:\n  vgg_weights: random\n")
    write_metrics(root, metrics)
    return root


def write_metrics(root: Path, metrics: dict[str, float]) -> None:
    """``reports/metrics.json`` and ``comparison.json`` as the evaluate stage writes them."""
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/metrics.json").write_text(json.dumps({TEST_SET: metrics}))
    average = {k: v / 2 for k, v in metrics.items()}
    (root / "reports/comparison.json").write_text(json.dumps({TEST_SET: {"average": average}}))


def log_training_run(
    root: Path, tracking_uri: str, experiment: str = "coconet", model=None
) -> dict:
    """A finished MLflow run holding a model in the registry format (``model``, default a tiny
    ``Linear`` that only registers, never loads as CoCoNet); writes artifacts/train_run.json."""
    mlflow.set_tracking_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    location = (root.parent / "mlartifacts").as_uri()  # never ./mlruns in the cwd
    exp_id = exp.experiment_id if exp else mlflow.create_experiment(experiment, location)
    with mlflow.start_run(experiment_id=exp_id) as run:
        mlflow.log_params({"train.lr": 0.0001, "model.vgg_weights": "random"})
        mlflow.set_tags({names.GIT_COMMIT: "c" * 40, names.GIT_DIRTY: "false"})
        mlflow.log_metric(names.epoch_metric("loss"), 0.5, step=1)
        for name, rel in (("raw_index.csv", "data/raw/index.csv"),
                          ("masks_index.csv", "data/masks/index.csv")):  # fmt: skip
            if (root / rel).is_file():
                with tempfile.TemporaryDirectory() as tmp:
                    shutil.copyfile(root / rel, Path(tmp) / name)
                    mlflow.log_artifact(str(Path(tmp) / name), names.LINEAGE_ARTIFACTS)
        config = {"vgg_weights": "random", "params_digest": "0" * 64}
        info = pyfunc_model.log_model(model or torch.nn.Linear(2, 1), config)
    record = {
        "run_id": run.info.run_id,
        "experiment_id": exp_id,
        "tracking_uri": tracking_uri,
        "model_uri": info.model_uri,
        "model_id": info.model_id,
        "run_model_uri": f"runs:/{run.info.run_id}/model",
        "params_digest": "0" * 64,
    }
    (root / "artifacts").mkdir(exist_ok=True)
    (root / "artifacts/train_run.json").write_text(json.dumps(record))
    log_evaluation_run(root, record, json.loads((root / "reports/metrics.json").read_text()))
    return record


def log_evaluation_run(
    root: Path, record: dict, metrics: dict, max_pairs: int | None = None
) -> str:
    """An evaluation run of ``record``'s model holding ``metrics`` (``{test set: {metric:
    mean}}``); writes ``reports/evaluation_run.json`` with the test split's fingerprint."""
    params = Params.model_validate({"evaluate": {"max_pairs": max_pairs}})
    fingerprint = evaluation_fingerprint(read_index(root / "data/raw/index.csv"), params)
    with mlflow.start_run(
        experiment_id=record["experiment_id"], parent_run_id=record["run_id"]
    ) as run:
        for test_set, values in metrics.items():
            mlflow.log_metrics(
                {names.eval_metric(f"{test_set}/CoCoNet", k): v for k, v in values.items()},
                model_id=record["model_id"],
            )
        mlflow.set_tag(names.EVAL_SPLIT_FINGERPRINT, fingerprint)
    body = {"run_id": run.info.run_id, "test_fingerprint": fingerprint}
    (root / "reports/evaluation_run.json").write_text(json.dumps(body))
    return run.info.run_id
