"""A retrain in progress, written down so that the next retrain can undo it if this one dies.

A retrain killed outright (its worker or machine gone, ``kill -9``) runs no rollback: the
ingested pairs, the edited catalogue and params, a half-updated ``dvc.lock`` and the outputs
DVC deleted stay behind. So a retrain writes ``.dvc/tmp/retrain-journal.json`` before it
changes anything: the flow run, when it started, the :class:`~flows.workspace_backup.
WorkspaceBackup` folder, the ingestion snapshot file and ``dvc status`` before the run. It is
removed when the run ends either way (success, or a completed rollback). The next retrain finds
it under the retrain lock, so its writer is certainly gone, and rolls the workspace back by the
same rules (:func:`flows.retrain.undo`) before it starts.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.core.atomic import write_json
from pipeline.core.paths import ProjectPaths

JOURNAL_NAME = "retrain-journal.json"


def journal_path(root: Path) -> Path:
    """Where a running retrain keeps its journal (``.dvc/tmp``, ignored by git and DVC)."""
    return ProjectPaths(root).dvc_tmp / JOURNAL_NAME


@dataclass(frozen=True)
class RetrainJournal:
    """What a retrain that did not finish leaves for the next one."""

    flow_run: str
    started: str
    backup: str  # the WorkspaceBackup folder
    snapshot: str  # the ingestion snapshot file (absent when nothing was ingested yet)
    before: dict[str, Any]  # ``dvc status`` before the run

    @classmethod
    def begin(
        cls, root: Path, flow_run: str, backup: Path, before: dict[str, Any]
    ) -> RetrainJournal:
        """Write the journal of a retrain that is about to change the workspace."""
        journal = cls(
            flow_run=flow_run,
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            backup=str(backup),
            snapshot=str(backup / "ingestion.json"),
            before=before,
        )
        write_json(journal_path(root), asdict(journal))
        return journal

    @classmethod
    def left_behind(cls, root: Path) -> RetrainJournal | None:
        """The journal of a retrain that never finished, if there is one."""
        path = journal_path(root)
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))

    @staticmethod
    def end(root: Path) -> None:
        """The run ended (succeeded, or was rolled back): nothing is left to undo."""
        journal_path(root).unlink(missing_ok=True)

    def describe(self) -> str:
        """One line naming the run that did not finish."""
        return f"retrain flow run {self.flow_run} (started {self.started}) did not finish"
