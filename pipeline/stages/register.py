"""Register stage: put the trained model in MLflow's model registry and promote it by rule.

The new version gets lineage tags (git commit, params digest, the ``dvc.lock`` hashes of every
upstream stage's outputs, the pairs per dataset and split, the VGG weights, the evaluation
means and a fingerprint of the test split) and the training run gets the same tags plus the
data/mask indexes, ``dvc.lock`` and ``params.yaml`` as artifacts under ``lineage/``, so the
lineage survives deletion of the local data.

Promotion rule (``params.register``): the first version becomes ``champion``. A later version
takes ``champion`` only if it was evaluated on the same test split (same fingerprint: sorted
test pair ids and their image sha256s, plus the metric convention and pair limit) and beats
the champion on at least ``min_wins`` of ``promote_metrics`` (strictly better means, in each
metric's direction). Otherwise it becomes ``challenger``; a version evaluated on a different
split cannot be compared, so it is a challenger whatever its scores, and the reason says so.
The decision and reason are tags and the description of the version and go to
``artifacts/registered.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import InputError
from pipeline.core.imageio import atomic_path
from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.tracking.dvc_lock import LOCK_FILE, stage_out_hashes
from pipeline.tracking.experiment import git_state

log = logging.getLogger(__name__)

LINEAGE_STAGES = ("download", "masks", "patches", "train", "evaluate")
LINEAGE_ARTIFACTS = "lineage"
CHAMPION, CHALLENGER = "champion", "challenger"
FINGERPRINT_TAG = "eval.test_fingerprint"


@dataclass(frozen=True)
class Decision:
    """Outcome of the promotion rule for one new version."""

    promote: bool
    reason: str
    compared_to: str = ""  # champion version compared against ("" if none)

    @property
    def alias(self) -> str:
        return CHAMPION if self.promote else CHALLENGER


def coconet_means(metrics: dict[str, Any]) -> dict[str, float]:
    """CoCoNet's mean metrics from ``reports/metrics.json``: the known metric names at top
    level (or under a ``coconet`` key); baselines, counts and undefined (null) means ignored."""
    from pipeline.metrics import METRIC_DIRECTION

    source = metrics.get("coconet", metrics)
    if isinstance(source, dict) and isinstance(source.get("mean"), dict):
        source = source["mean"]
    means = {
        k: float(v)
        for k, v in source.items()
        if k in METRIC_DIRECTION and isinstance(v, int | float) and not isinstance(v, bool)
    }
    if not means:
        raise InputError("metrics.json holds no CoCoNet mean metrics")
    return means


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


def test_fingerprint(rows: list[dict[str, str]], params: Params) -> str:
    """sha256 over the sorted test pairs (id + image sha256s) and the evaluation protocol
    (metric convention, pair limit): equal fingerprints mean comparable evaluation means."""
    test = sorted(
        (r["pair_id"], r.get("ir_sha256", ""), r.get("vis_sha256", ""))
        for r in rows
        if r["split"] == "test"
    )
    lines = [" ".join(t) for t in test]
    lines.append(f"convention={params.evaluate.convention} max_pairs={params.evaluate.max_pairs}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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
        FINGERPRINT_TAG: test_fingerprint(rows, params),
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


def champion_means(tags: dict[str, str]) -> dict[str, float]:
    """The evaluation means recorded on a version's ``eval.<metric>`` tags."""
    out = {}
    for key, value in tags.items():
        if key.startswith("eval.") and key.count(".") == 1:
            try:
                out[key.removeprefix("eval.")] = float(value)
            except ValueError:
                continue
    return out


def decide(
    new_means: dict[str, float],
    new_fingerprint: str,
    champion: tuple[str, dict[str, str]] | None,
    params: Params,
) -> Decision:
    """Apply the promotion rule; ``champion`` is (version, its tags) or None."""
    from pipeline.metrics import METRIC_DIRECTION

    rule = params.register_
    unknown = [m for m in rule.promote_metrics if m not in METRIC_DIRECTION]
    if unknown:
        raise InputError(f"register.promote_metrics: unknown metric(s) {unknown}")
    missing = [m for m in rule.promote_metrics if m not in new_means]
    if missing:
        raise InputError(f"metrics.json lacks promote metric(s) {missing}")
    if champion is None:
        return Decision(True, "first version: no champion yet")
    version, tags = champion
    old_fp = tags.get(FINGERPRINT_TAG, "")
    if old_fp != new_fingerprint:
        return Decision(
            False,
            f"not comparable: champion v{version} was evaluated on test split "
            f"{old_fp[:12] or 'unknown'}, this version on {new_fingerprint[:12]}; "
            "champion kept (re-evaluate on one split, or move the alias by hand)",
            version,
        )
    old_means = champion_means(tags)
    absent = [m for m in rule.promote_metrics if m not in old_means]
    if absent:
        return Decision(
            False, f"not comparable: champion v{version} has no recorded {absent}", version
        )
    wins, details = 0, []
    for m in rule.promote_metrics:
        new, old = new_means[m], old_means[m]
        better = new > old if METRIC_DIRECTION[m] == "higher" else new < old
        wins += better
        sign = ">" if new > old else "<" if new < old else "="
        details.append(f"{m} {new:.6g} {sign} {old:.6g}{'' if better else ' (no win)'}")
    need = min(rule.min_wins, len(rule.promote_metrics))
    verdict = "beats" if wins >= need else "does not beat"
    reason = (
        f"{verdict} champion v{version} on {wins}/{len(rule.promote_metrics)} metrics "
        f"(needs {need}): " + "; ".join(details)
    )
    return Decision(wins >= need, reason, version)


def _log_lineage_artifacts(client: Any, run_id: str, paths: list[Path]) -> None:
    for path in paths:
        if path.is_file():
            client.log_artifact(run_id, str(path), LINEAGE_ARTIFACTS)


def _artifact_copies(paths: ProjectPaths, tmp: Path) -> list[Path]:
    """The files logged under ``lineage/``, with index CSVs renamed so they do not clash."""
    import shutil

    sources = {
        "raw_index.csv": paths.index,
        "masks_index.csv": paths.masks_index,
        "dvc.lock": paths.dvc_lock,
        "params.yaml": paths.params,
    }
    out = []
    for name, src in sources.items():
        if src.is_file():
            shutil.copyfile(src, tmp / name)
            out.append(tmp / name)
    return out


def current_champion(client: Any, name: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) of the model's champion; None if the model or the alias does not exist
    yet (any other registry error propagates: it must not look like "no champion")."""
    from mlflow.exceptions import MlflowException

    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(current.version), dict(current.tags)


def run(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    """Register the training run's model, tag it, apply the promotion rule, write the record."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import RunTag

    from pipeline.tracking import experiment as tracking

    root = paths.root
    run_info = tracking.read_run_info(paths.run_info)
    means = coconet_means(json.loads(paths.metrics.read_text()))
    rows = read_index(paths.index)
    tags = lineage_tags(params, run_info, means, rows, paths.dvc_lock, root)

    tracking.attach_uri(run_info, root)  # checked: this project's store, and it exists
    client = MlflowClient()
    name = params.register_.model_name
    run_id = run_info["run_id"]
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as tmp:
        _log_lineage_artifacts(client, run_id, _artifact_copies(paths, Path(tmp)))

    champion = current_champion(client, name)
    decision = decide(means, tags[FINGERPRINT_TAG], champion, params)

    source = run_info.get("model_uri") or f"runs:/{run_id}/model"
    version = mlflow.register_model(source, name, tags=tags).version
    client.set_model_version_tag(name, version, "promotion.decision", decision.alias)
    client.set_model_version_tag(name, version, "promotion.reason", decision.reason)
    if decision.compared_to:
        client.set_model_version_tag(name, version, "promotion.compared_to", decision.compared_to)
    client.update_model_version(name, version, description=f"{decision.alias}: {decision.reason}")
    client.set_registered_model_alias(name, decision.alias, version)  # last: only on success

    record = {
        "name": name,
        "version": str(version),
        "alias": decision.alias,
        "decision": "promoted" if decision.promote else "not promoted",
        "reason": decision.reason,
        "compared_to": decision.compared_to,
        "run_id": run_id,
        "model_uri": f"models:/{name}/{version}",
        "tracking_uri": mlflow.get_tracking_uri(),
    }
    out = paths.registered
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_file:
        tmp_file.write_text(json.dumps(record, indent=2) + "\n")
    log.info("registered %s v%s as %s: %s", name, version, decision.alias, decision.reason)
    return record


def _run_and_print(params: Params, paths: ProjectPaths) -> dict[str, Any]:
    record = run(params, paths)
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    stage_main(_run_and_print, __doc__.splitlines()[0])
