"""Register stage: put the trained model in MLflow's model registry and promote it by rule.

The new version gets lineage tags (:mod:`pipeline.tracking.version_tags`: git commit, params
digest, the ``dvc.lock`` hashes of every upstream stage's outputs, the pairs per dataset and
split, the VGG weights, the evaluation means and a fingerprint of the test split) and the
training run gets the same tags plus the data/mask indexes, ``dvc.lock`` and ``params.yaml`` as
artifacts under ``lineage/``, so the lineage survives deletion of the local data.

Promotion (:mod:`pipeline.evaluation.promotion`): the first version becomes ``champion``; a
later one only if it beats the champion on the same test split, else ``challenger``. The
decision and reason are tags and the description of the version and go to
``artifacts/registered.json``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.params import Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.evaluation.promotion import FINGERPRINT_TAG, coconet_means, decide
from pipeline.tracking.registry import Registry
from pipeline.tracking.run_record import read_run_info
from pipeline.tracking.version_tags import lineage_tags, read_index

log = logging.getLogger(__name__)


def run(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Register the training run's model, tag it, apply the promotion rule, write the record."""
    run_info = read_run_info(paths.run_info)
    means = coconet_means(json.loads(paths.metrics.read_text()))
    rows = read_index(paths.index)
    tags = lineage_tags(params, run_info, means, rows, paths.dvc_lock, paths.root)

    registry = Registry(run_info, paths.root)
    name = params.register_.model_name
    run_id = run_info["run_id"]
    files = {
        "raw_index.csv": paths.index,
        "masks_index.csv": paths.masks_index,
        "dvc.lock": paths.dvc_lock,
        "params.yaml": paths.params,
    }
    registry.record_lineage(run_id, tags, files)
    decision = decide(means, tags[FINGERPRINT_TAG], registry.champion(name), params)
    source = run_info.get("model_uri") or f"runs:/{run_id}/model"
    version = registry.register(source, name, tags, decision)
    record = {
        "name": name,
        "version": version,
        "alias": decision.alias,
        "decision": "promoted" if decision.promote else "not promoted",
        "reason": decision.reason,
        "compared_to": decision.compared_to,
        "run_id": run_id,
        "model_uri": f"models:/{name}/{version}",
        "tracking_uri": registry.uri,
    }
    write_json(paths.registered, record)
    log.info("registered %s v%s as %s: %s", name, version, decision.alias, decision.reason)
    return record


def _run_and_print(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    record = run(params, paths)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    stage_main(_run_and_print, __doc__.splitlines()[0])
