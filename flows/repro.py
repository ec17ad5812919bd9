"""The ``pipeline`` Prefect flow: the DVC stages in order, one task each, through DVC.

Each task runs ``dvc repro --single-item <stage>``: DVC decides whether the stage is up to
date, runs it if not, and records it in ``dvc.lock`` and its cache, so Prefect adds
orchestration (retries of the download, logs, a report) without a second record of what ran.
One ``dvc status`` at the start lets the leading up-to-date stages be recorded without starting
DVC once per stage (what ``dvc repro`` would conclude anyway); from the first stage that runs
on, every stage goes through ``dvc repro``.
The flow ends with a markdown artifact: the stage table, the metric table and the registry
decision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.dvc_runner import stage_names
from flows.overrides import compose_params
from flows.tasks import dvc_status, repro_stage, run_logger
from pipeline.core.params import PROJECT_ROOT
from pipeline.core.paths import ProjectPaths
from pipeline.evaluation.report import ranking_table
from pipeline.metrics import METRIC_DIRECTION
from pipeline.tracking.ui_links import record_links

ARTIFACT_KEY = "coconet-pipeline"
RETRIED_STAGES = ("download",)


def metric_table(model: dict[str, Any], others: dict[str, Any]) -> str:
    """The ranking table of one test set: CoCoNet's means (``reports/metrics.json``) and the
    baselines' and references' (``reports/comparison.json``)."""
    rows = {"CoCoNet": model, **others}
    direction = {
        m: how for m, how in METRIC_DIRECTION.items() if any(m in r for r in rows.values())
    }
    return ranking_table(rows, direction).rstrip("\n")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def report_markdown(root: Path, stages: list[dict[str, Any]], applied: dict[str, Any]) -> str:
    """The flow's markdown artifact."""
    out = ["# CoCoNet pipeline run", "", "| stage | result | seconds |", "|---|---|---|"]
    for s in stages:
        out.append(f"| {s['stage']} | {'ran' if s['ran'] else 'up to date'} | {s['seconds']} |")
    if applied:
        out += ["", "Parameter overrides: " + ", ".join(f"`{k}={v}`" for k, v in applied.items())]
    paths = ProjectPaths(root)
    metrics, comparison = _read(paths.metrics) or {}, _read(paths.comparison) or {}
    pairs = (_read(paths.evaluation / "summary.json") or {}).get("test_pairs", {})
    for test_set, model in metrics.items():
        count = f", {pairs[test_set]} pairs" if test_set in pairs else ""
        out += ["", f"## Metrics: {test_set} (means{count})", ""]
        out.append(metric_table(model, comparison.get(test_set, {})))
    reg = _read(paths.registered)
    if reg:
        ran = any(s["stage"] == "register" and s["ran"] for s in stages)
        out += [
            "",
            "## Registry" + ("" if ran else " (unchanged: register was up to date)"),
            "",
            f"`{reg['name']}` version **{reg['version']}** → alias **{reg['alias']}** "
            f"({reg['decision']}): {reg['reason']}",
        ]
    links = record_links(_read(paths.run_info), _read(paths.evaluation_run), reg)
    if links:
        out += ["", "## In MLflow", ""]
        out += [f"- [{label}]({url})" for label, url in links.items()]
    return "\n".join(out) + "\n"


@flow(name="coconet-pipeline")
def run_pipeline(
    project_dir: str | None = None,
    overrides: list[str] | None = None,
    download_retries: int = 2,
    retry_delay_seconds: float = 10.0,
    composed: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run every DVC stage in order (up-to-date ones are skipped by DVC) and report.
    ``overrides`` compose params.yaml first (:mod:`flows.overrides`); ``composed`` names
    overrides a caller already composed with, for the report."""
    root = Path(project_dir or PROJECT_ROOT).resolve()
    logger = run_logger()
    applied = compose_params(root, overrides) if overrides else dict(composed or {})
    if applied:
        logger.info("params.yaml composed from conf/ with %s", applied)
    changed = dvc_status(str(root))
    results: list[dict[str, Any]] = []
    for stage in stage_names(root):
        runner = repro_stage
        if stage in RETRIED_STAGES:
            runner = repro_stage.with_options(
                retries=download_retries, retry_delay_seconds=retry_delay_seconds
            )
        upstream_ran = any(r["ran"] for r in results)
        results.append(runner(stage, str(root), not upstream_ran and stage not in changed))
    markdown = report_markdown(root, results, applied)
    create_markdown_artifact(markdown=markdown, key=ARTIFACT_KEY, description="CoCoNet pipeline")
    registered = ProjectPaths(root).registered
    return {
        "stages": results,
        "ran": [r["stage"] for r in results if r["ran"]],
        "registered": json.loads(registered.read_text()) if registered.is_file() else None,
        "report": markdown,
    }
