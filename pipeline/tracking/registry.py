"""The model registry: the current champion, a new version with its tags, decision and alias.

:class:`Registry` opens the store the training run was recorded in (checked: this project's,
and it exists). The alias moves last, only once the version and its tags are recorded.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException

from pipeline.evaluation.promotion import CHAMPION, Decision
from pipeline.tracking.experiment import attach_uri

LINEAGE_ARTIFACTS = "lineage"


class Registry:
    """The registry of the store that holds a training run (``train_run.json``'s record)."""

    def __init__(self, run_info: Mapping[str, str], root: Path) -> None:
        self.uri = attach_uri(dict(run_info), root)
        self.client = MlflowClient(self.uri)

    def champion(self, name: str) -> tuple[str, dict[str, str]] | None:
        """(version, tags) of ``name``'s champion, None when there is none yet."""
        return current_champion(self.client, name)

    def record_lineage(
        self, run_id: str, tags: Mapping[str, str], files: Mapping[str, Path]
    ) -> None:
        """See :func:`record_lineage`."""
        record_lineage(self.client, run_id, tags, files)

    def register(self, source: str, name: str, tags: Mapping[str, str], decision: Decision) -> str:
        """See :func:`register_version`."""
        return register_version(self.client, source, name, tags, decision)


def current_champion(client: MlflowClient, name: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) of the model's champion; None if the model or the alias does not exist
    yet (any other registry error propagates: it must not look like "no champion")."""
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return str(current.version), dict(current.tags)


def record_lineage(
    client: MlflowClient, run_id: str, tags: Mapping[str, str], files: Mapping[str, Path]
) -> None:
    """Tag the training run and log ``files`` (artifact name -> local file, those that exist)
    under ``lineage/``."""
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in files.items():
            if source.is_file():
                shutil.copyfile(source, Path(tmp) / name)
                client.log_artifact(run_id, str(Path(tmp) / name), LINEAGE_ARTIFACTS)


def register_version(
    client: MlflowClient,
    source: str,
    name: str,
    tags: Mapping[str, str],
    decision: Decision,
) -> str:
    """Register ``source`` as a version of ``name`` with ``tags`` and the decision; move the
    decision's alias to it last. Returns the version number."""
    version = mlflow.register_model(source, name, tags=dict(tags)).version
    client.set_model_version_tag(name, version, "promotion.decision", decision.alias)
    client.set_model_version_tag(name, version, "promotion.reason", decision.reason)
    if decision.compared_to:
        client.set_model_version_tag(name, version, "promotion.compared_to", decision.compared_to)
    client.update_model_version(name, version, description=f"{decision.alias}: {decision.reason}")
    client.set_registered_model_alias(name, decision.alias, version)  # last: only on success
    return str(version)
