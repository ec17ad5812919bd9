"""The tags a registered version carries: what ties it to its training and evaluation runs and
what the registry decided. Everything else about a version is read from those runs (params,
code version, data inputs, lineage files on the training run; metrics on the evaluation run).

* ``eval.run_id``: the evaluation its promotion decision used;
* ``eval.test_fingerprint``: that evaluation's test split and protocol (comparability);
* ``params.sha256``: the whole ``params.yaml`` at registration (``lineage --verify``);
* ``dvc.lock``: ``{stage: {path: md5}}`` of every output up to evaluate, as JSON;
* ``data.pairs``: ``{dataset: {split: pairs}}``, as JSON;
* ``promotion.decision``, ``promotion.reason``, ``promotion.compared_to``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.catalogue.index import dataset_counts
from pipeline.core.params import Params
from pipeline.evaluation.promotion import Decision
from pipeline.tracking import names
from pipeline.tracking.dvc_lock import stage_out_hashes

LINEAGE_STAGES = ("download", "masks", "patches", "train", "evaluate")


def lineage_tags(
    params: Params,
    rows: list[dict[str, str]],
    lock_path: Path,
    eval_run_id: str,
    fingerprint: str,
) -> dict[str, str]:
    """The version's lineage tags (the decision's come from :func:`decision_tags`)."""
    hashes = {s: o for s, o in stage_out_hashes(lock_path).items() if s in LINEAGE_STAGES}
    return {
        names.EVAL_RUN: eval_run_id,
        names.EVAL_SPLIT_FINGERPRINT: fingerprint,
        names.PARAMS_DIGEST: params.digest(),
        names.DVC_HASHES: json.dumps(hashes, sort_keys=True),
        names.DATA_PAIRS: json.dumps(dataset_counts(rows), sort_keys=True),
    }


def decision_tags(decision: Decision) -> dict[str, str]:
    """The promotion decision, its reason and the champion it was compared with (if any)."""
    tags = {names.DECISION: decision.alias, names.REASON: decision.reason}
    if decision.compared_to:
        tags[names.COMPARED_TO] = decision.compared_to
    return tags


def recorded_hashes(tags: dict[str, str]) -> dict[str, dict[str, str]]:
    """``{stage: {path: md5}}`` from a version's ``dvc.lock`` tag (or the per-path
    ``dvc.<stage>.<path>`` tags of versions registered before it)."""
    if names.DVC_HASHES in tags:
        return json.loads(tags[names.DVC_HASHES])
    out: dict[str, dict[str, str]] = {}
    for key, value in sorted(tags.items()):
        if key.startswith("dvc."):
            stage, _, path = key.removeprefix("dvc.").partition(".")
            out.setdefault(stage, {})[path] = value
    return out
