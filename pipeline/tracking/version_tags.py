"""The lineage tags a registered version (and its training run) carries: the code version, the
params digest, the ``dvc.lock`` hashes of every upstream output, the pairs per dataset and
split, the VGG weights, the evaluation means and the test split's fingerprint."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.evaluation.promotion import FINGERPRINT_TAG, evaluation_fingerprint
from pipeline.tracking.dvc_lock import LOCK_FILE, stage_out_hashes
from pipeline.tracking.provenance import git_state

LINEAGE_STAGES = ("download", "masks", "patches", "train", "evaluate")


def read_index(path: Path) -> list[dict[str, str]]:
    """Rows of an index CSV (``data/raw/index.csv`` or ``data/masks/index.csv``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the upstream stages first")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def dataset_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Pairs per dataset and split: ``{dataset: {split: n}}``."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row["dataset"], Counter())[row["split"]] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}


def lineage_tags(
    params: Params,
    run_info: dict[str, Any],
    means: dict[str, float],
    rows: list[dict[str, str]],
    lock_path: Path = LOCK_FILE,
    root: Path = PROJECT_ROOT,
) -> dict[str, str]:
    """All lineage tags for the model version (and the training run)."""
    commit, dirty = git_state(root)
    tags = {
        "git.commit": commit,
        "git.dirty": str(dirty).lower(),
        "params.digest": params.digest(),
        "train.run_id": str(run_info["run_id"]),
        "train.params_digest": str(run_info.get("params_digest", "")),
        "model.vgg_weights": params.model.vgg_weights,
        "eval.convention": params.evaluate.convention,
        FINGERPRINT_TAG: evaluation_fingerprint(rows, params),
    }
    for stage, outs in stage_out_hashes(lock_path).items():
        if stage in LINEAGE_STAGES:
            for path, md5 in outs.items():
                tags[f"dvc.{stage}.{path}"] = md5
    counts = dataset_counts(rows)
    tags["data.datasets"] = ",".join(counts)
    for name, splits in counts.items():
        for split, n in splits.items():
            tags[f"data.{name}.{split}"] = str(n)
    for name, value in means.items():
        tags[f"eval.{name}"] = repr(value)
    return tags
