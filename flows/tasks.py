"""Prefect tasks the flows share: the run logger, ``dvc repro`` of one stage, ``dvc status``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from flows.dvc_runner import SKIPPED_MARK, pending_stages, run_dvc


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run, a plain logger outside (task.fn calls)."""
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
