"""Register stage: put the trained model in MLflow's model registry and promote it by rule.

The version is tied to its training run (MLflow's own link) and to the evaluation run its
promotion used, and carries the lineage the runs cannot (:mod:`pipeline.tracking.version_tags`:
the test split's fingerprint, the params digest, the ``dvc.lock`` hashes up to evaluate, the
pairs per dataset and split). Promotion (:mod:`pipeline.evaluation.promotion`): the first
version becomes ``champion``; a later one only if it beats the champion on the same test split
(``register.test_set``), else ``challenger``. The decision and reason are tags and the
description of the version and go to ``artifacts/registered.json``. Registering the same
training run again returns its version unchanged.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.catalogue.index import read_index
from pipeline.core.atomic import write_json
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.evaluation.promotion import coconet_means, decide
from pipeline.tracking import names
from pipeline.tracking.registry import Registry
from pipeline.tracking.run_record import read_run_info
from pipeline.tracking.version_tags import lineage_tags

log = logging.getLogger(__name__)
MODEL_METHOD = "CoCoNet"


def run(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Register the training run's model (once), apply the promotion rule, write the record."""
    rule = params.register_
    run_info = read_run_info(paths.run_info)
    evaluation = json.loads(paths.evaluation_run.read_text())
    means = coconet_means(json.loads(paths.metrics.read_text()), rule.test_set)
    rows = read_index(paths.index)
    fingerprint = evaluation["test_fingerprint"]
    tags = lineage_tags(params, rows, paths.dvc_lock, evaluation["run_id"], fingerprint)
    registry = Registry(run_info, paths.root)
    run_id = run_info["run_id"]
    source = run_info.get("model_uri") or f"runs:/{run_id}/model"
    version, decided = registry.register(
        source,
        rule.model_name,
        run_id,
        tags,
        lambda: decide(
            means, fingerprint, registry.champion(rule.model_name, rule.test_set, MODEL_METHOD),
            params,
        ),
    )  # fmt: skip
    vtags = version.tags
    reason = vtags.get(names.REASON, "")
    record = {
        "name": rule.model_name,
        "version": str(version.version),
        "alias": vtags.get(names.DECISION, ""),
        "decision": ("promoted" if vtags.get(names.DECISION) == "champion" else "not promoted"),
        "reason": reason if decided else f"already registered from run {run_id}: {reason}",
        "compared_to": vtags.get(names.COMPARED_TO, ""),
        "run_id": run_id,
        "evaluation_run_id": vtags.get(names.EVAL_RUN, ""),
        "model_uri": f"models:/{rule.model_name}/{version.version}",
        "tracking_uri": registry.uri,
    }
    write_json(paths.registered, record)
    log.info("registered %s v%s as %s: %s", record["name"], record["version"], record["alias"],
             record["reason"])  # fmt: skip
    return record


def _run_and_print(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    record = run(params, paths)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    stage_main(_run_and_print, __doc__.splitlines()[0])
