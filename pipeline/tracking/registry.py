"""The model registry: the current champion, a new version with its tags, decision and alias.

:class:`Registry` opens the store the training run was recorded in (checked: this project's,
and it exists). Registering is idempotent per training run: a second register of the same run
returns its version as it is, and a version left without a decision (a register killed after
MLflow created it) is completed, never duplicated. The alias moves last, only once the version
and its tags are recorded. Nothing is written to the training run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.evaluation.promotion import CHAMPION, Champion, Decision
from pipeline.metrics import METRIC_NAMES
from pipeline.tracking import names
from pipeline.tracking.evaluation_run import metric_key
from pipeline.tracking.experiment import attach_uri
from pipeline.tracking.version_tags import decision_tags


class Registry:
    """The registry of the store that holds a training run (``train_run.json``'s record)."""

    def __init__(self, run_info: Mapping[str, str], root: Path) -> None:
        self.uri = attach_uri(dict(run_info), root)
        self.client = MlflowClient(self.uri)

    def champion(self, name: str, test_set: str, model_method: str) -> Champion | None:
        """``name``'s champion with the means of the evaluation its promotion used (on
        ``test_set``); None when there is none yet (any other registry error propagates: it
        must not look like "no champion")."""
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        tags = dict(current.tags)
        fingerprint = tags.get(names.EVAL_SPLIT_FINGERPRINT, "")
        return Champion(str(current.version), self._means(tags, test_set, model_method),
                        fingerprint)  # fmt: skip

    def _means(self, tags: dict[str, str], test_set: str, model_method: str) -> dict[str, float]:
        """The means of the version's evaluation run (``eval.<metric>`` tags of versions
        registered before evaluations had runs)."""
        if names.EVAL_RUN not in tags:
            return {m: float(tags[f"eval.{m}"]) for m in METRIC_NAMES if f"eval.{m}" in tags}
        metrics = self.client.get_run(tags[names.EVAL_RUN]).data.metrics
        prefix = names.eval_metric(f"{test_set}/{metric_key(model_method)}", "")
        return {k.removeprefix(prefix): v for k, v in metrics.items() if k.startswith(prefix)}

    def version_of_run(self, name: str, run_id: str) -> ModelVersion | None:
        """The version of ``name`` already registered from ``run_id``, if any."""
        found = self.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
        return max(found, key=lambda v: int(v.version)) if found else None

    def _finish_alias(self, name: str, version: ModelVersion) -> ModelVersion:
        """Move the decided alias to ``version`` if an earlier register died between writing
        the decision and moving it; only while no later version exists (a later one decided
        after it and may hold the alias rightly)."""
        decided = version.tags[names.DECISION]
        if decided in version.aliases:
            return version
        versions = self.client.search_model_versions(f"name = '{name}'")
        if max(int(v.version) for v in versions) != int(version.version):
            return version
        self.client.set_registered_model_alias(name, decided, version.version)
        return self.client.get_model_version(name, version.version)

    def register(
        self,
        source: str,
        name: str,
        run_id: str,
        tags: Mapping[str, str],
        decide: Callable[[], Decision],
    ) -> tuple[ModelVersion, bool]:
        """(the version of ``run_id``, whether it was decided now). A run registered before is
        returned as it is; otherwise ``decide()`` runs, the version gets ``tags`` and the
        decision, and the decision's alias moves to it last."""
        version = self.version_of_run(name, run_id)
        if version is not None and names.DECISION in version.tags:
            return self._finish_alias(name, version), False
        if version is None:
            version = mlflow.register_model(source, name, tags=dict(tags))
        else:  # an earlier register died after MLflow created the version: complete it
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version.version, key, value)
        decision = decide()
        self.client.update_model_version(
            name, version.version, description=f"{decision.alias}: {decision.reason}"
        )
        for key, value in decision_tags(decision).items():
            self.client.set_model_version_tag(name, version.version, key, value)
        self.client.set_registered_model_alias(name, decision.alias, version.version)  # last
        return self.client.get_model_version(name, version.version), True
