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
import logging
import math
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE

from flows.dvc_cli import SKIPPED_MARK, pending_stages, run_dvc, stage_names
from flows.overrides import apply_overrides
from pipeline.core.params import PROJECT_ROOT

ARTIFACT_KEY = "coconet-pipeline"
RETRIED_STAGES = ("download",)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run, a plain logger outside (task.fn calls)."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("coconet.flows")


@task(name="dvc-repro", task_run_name="dvc repro {stage}", cache_policy=NONE)
def repro_stage(stage: str, project_dir: str, known_up_to_date: bool = False) -> dict[str, Any]:
    """``dvc repro --single-item <stage>``; its output goes to the run log line by line.

    ``known_up_to_date``: ``dvc status`` found nothing to do for this stage and no stage before
    it ran, so ``dvc repro`` would skip it; the task records that without starting DVC again.
    """
    logger = run_logger()
    if known_up_to_date:
        logger.info("stage %s up to date (dvc status)", stage)
        return {"stage": stage, "ran": False, "seconds": 0.0}
    result = run_dvc(["repro", "--single-item", stage], Path(project_dir), log=logger.info)
    ran = not any(SKIPPED_MARK in line for line in result.lines)
    logger.info("stage %s %s in %.1f s", stage, "ran" if ran else "up to date", result.seconds)
    return {"stage": stage, "ran": ran, "seconds": round(result.seconds, 2)}


@task(name="dvc-status", cache_policy=NONE)
def dvc_status(project_dir: str) -> dict[str, Any]:
    """``dvc status``: the stages whose deps, params, command or outs changed."""
    changed = pending_stages(Path(project_dir))
    run_logger().info("dvc status: %s", ", ".join(changed) or "everything up to date")
    return changed


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return "n/a" if value is None else str(value)


def metric_table(metrics: dict[str, Any]) -> str:
    """Markdown table: CoCoNet's means and each baseline's, one column per metric."""
    from pipeline.metrics import METRIC_DIRECTION

    rows = {"CoCoNet": metrics, **metrics.get("baselines", {})}
    names = [m for m in METRIC_DIRECTION if any(m in r for r in rows.values())]
    arrows = {"higher": "↑", "lower": "↓"}
    head = "| method | " + " | ".join(f"{m} {arrows[METRIC_DIRECTION[m]]}" for m in names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for method, values in rows.items():
        cells = " | ".join(_fmt(values.get(m)) for m in names)
        lines.append(f"| {method} | {cells} |")
    return "\n".join(lines)


def report_markdown(root: Path, stages: list[dict[str, Any]], applied: dict[str, Any]) -> str:
    """The flow's markdown artifact."""
    out = ["# CoCoNet pipeline run", "", "| stage | result | seconds |", "|---|---|---|"]
    for s in stages:
        out.append(f"| {s['stage']} | {'ran' if s['ran'] else 'up to date'} | {s['seconds']} |")
    if applied:
        out += ["", "Parameter overrides: " + ", ".join(f"`{k}={v}`" for k, v in applied.items())]
    metrics_path = root / "reports" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        extra = f" on {metrics['n_pairs']} test pairs" if "n_pairs" in metrics else ""
        out += ["", f"## Metrics (means{extra})", "", metric_table(metrics)]
    registered_path = root / "artifacts" / "registered.json"
    if registered_path.is_file():
        reg = json.loads(registered_path.read_text())
        ran = any(s["stage"] == "register" and s["ran"] for s in stages)
        out += [
            "",
            "## Registry" + ("" if ran else " (unchanged: register was up to date)"),
            "",
            f"`{reg['name']}` version **{reg['version']}** → alias **{reg['alias']}** "
            f"({reg['decision']}): {reg['reason']}",
        ]
    return "\n".join(out) + "\n"


@flow(name="coconet-pipeline")
def pipeline(
    project_dir: str | None = None,
    overrides: list[str] | None = None,
    download_retries: int = 2,
    retry_delay_seconds: float = 10.0,
) -> dict[str, Any]:
    """Run every DVC stage in order (up-to-date ones are skipped by DVC) and report."""
    from prefect.artifacts import create_markdown_artifact

    root = Path(project_dir or PROJECT_ROOT).resolve()
    logger = run_logger()
    applied = apply_overrides(root / "params.yaml", overrides or [])
    if applied:
        logger.info("params.yaml overrides: %s", applied)
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
    registered = root / "artifacts" / "registered.json"
    return {
        "stages": results,
        "ran": [r["stage"] for r in results if r["ran"]],
        "registered": json.loads(registered.read_text()) if registered.is_file() else None,
        "report": markdown,
    }
