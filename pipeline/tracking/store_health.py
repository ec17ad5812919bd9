"""The embedded store's runs, checked when a command opens the store (its file is checked by
:mod:`pipeline.tracking.store_file`).

* Runs of this project left RUNNING by a process that is gone (a training or evaluation killed
  with ``-9``) are marked KILLED by the next command of any kind that opens the store.
"""

from __future__ import annotations

from pathlib import Path

import mlflow

from pipeline.tracking import names
from pipeline.tracking.run_owner import is_stale, owned_running_filter, owner_tags


def mark_stale_runs(uri: str, root: Path, found_by: str = "") -> list[str]:
    """Mark KILLED the runs of ``root`` (any experiment) still RUNNING on this host although
    their process is gone; returns their ids. Runs of other hosts or roots are left alone."""
    client = mlflow.MlflowClient(uri)
    owner = owner_tags(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    stale = []
    for run in client.search_runs(experiments, owned_running_filter(owner), max_results=1000):
        pid = run.data.tags.get(names.OWNER_PID, "")
        if not is_stale(pid, owner):
            continue
        reason = f"stale: its process {pid} is gone" + (
            f" (found by {found_by})" if found_by else ""
        )
        client.set_tag(run.info.run_id, names.KILLED_REASON, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        stale.append(run.info.run_id)
    return stale
