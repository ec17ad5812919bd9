"""The light registry read (pipeline.tracking.sqlite_registry): MLflow's answer for
``models:/name@alias`` from an embedded SQLite store without importing MLflow, and MLflow's own
path wherever the light read cannot be sure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.tracking._model_registry.utils as registry_utils
import mlflow.tracking._tracking_service.utils as tracking_utils
import numpy as np
import pytest
from mlflow.utils.file_utils import local_file_uri_to_path

from pipeline.core.params import PROJECT_ROOT
from pipeline.fusion import fuse_arrays
from pipeline.inference import load_fusion_model
from pipeline.tracking import names, pyfunc_model, sqlite_registry
from pipeline.tracking.run_owner import owner_tags
from pipeline.tracking.sqlite_registry import SCHEMA_REVISION, model_folder
from tests.helpers.models import CPU_FP32

GLOBAL_URIS = ((tracking_utils, "_tracking_uri"), (registry_utils, "_registry_uri"))


@pytest.fixture(scope="module")
def project(random_model, tmp_path_factory) -> Path:
    """An embedded store (mlflow.db and mlartifacts/ in the project) holding ``random_model``
    as coconet v1, alias champion."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text("model:\n  vgg_weights: random\n")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("e", artifact_location=(root / "mlartifacts").as_uri())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # set_registry_uri exports it
        for module, uri_name in GLOBAL_URIS:  # an earlier test's store is not ours
            patch.setattr(module, uri_name, None)
        mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
        mlflow.set_registry_uri(f"sqlite:///{root / 'mlflow.db'}")
        with mlflow.start_run(experiment_id=experiment) as run:
            pyfunc_model.log_model(random_model, {"vgg_weights": "random"})
        version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "coconet")
    client.set_registered_model_alias("coconet", "champion", version.version)
    return root


@pytest.fixture
def client(project, monkeypatch) -> mlflow.MlflowClient:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    uri = f"sqlite:///{project / 'mlflow.db'}"
    return mlflow.MlflowClient(uri, registry_uri=uri)


def test_alias_and_version_name_the_folder_mlflow_downloads(project, client):
    expected = Path(local_file_uri_to_path(client.get_model_version_download_uri("coconet", 1)))
    assert model_folder("models:/coconet@champion", project) == expected
    assert model_folder("models:/coconet/1", project) == expected
    assert (expected / "MLmodel").is_file()


def test_fusing_from_the_registry_imports_no_mlflow(project, random_model, client):
    code = (
        "import sys, json, numpy as np\n"
        "from pathlib import Path\n"
        "from pipeline.inference import load_fusion_model\n"
        "from pipeline.fusion import fuse_arrays\n"
        "from tests.helpers.models import CPU_FP32\n"
        f"model = load_fusion_model('models:/coconet@champion', CPU_FP32, Path({str(project)!r}))\n"
        "vis = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)\n"
        "fused = fuse_arrays(model, vis, vis[::-1].copy(), CPU_FP32)\n"
        "print(json.dumps(['mlflow' in sys.modules, float(fused.sum())]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, env=env, check=True)  # fmt: skip
    imported, total = json.loads(done.stdout.strip().splitlines()[-1])
    assert imported is False
    vis = np.linspace(0, 1, 24 * 32, dtype=np.float32).reshape(24, 32)
    expected = fuse_arrays(random_model.eval(), vis, vis[::-1].copy(), CPU_FP32)
    assert total == pytest.approx(float(expected.sum()), rel=1e-5)


def test_what_only_mlflow_can_answer_goes_through_mlflow(project, client, monkeypatch):
    assert model_folder("models:/coconet@nothing", project) is None  # MLflow words the error
    assert model_folder("models:/other/1", project) is None
    run_id = client.search_runs([client.get_experiment_by_name("e").experiment_id])[0].info.run_id
    assert model_folder(f"runs:/{run_id}/model", project) is None
    monkeypatch.setattr(sqlite_registry, "SCHEMA_REVISION", "0000")  # a store MLflow migrated
    assert model_folder("models:/coconet@champion", project) is None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # a server: MLflow's client
    assert model_folder("models:/coconet@champion", project) is None


def test_a_stale_run_sends_the_read_through_mlflow_which_marks_it(project, client):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    experiment = client.get_experiment_by_name("e").experiment_id
    stale = client.create_run(experiment, tags={**owner_tags(project), names.OWNER_PID: dead})
    assert model_folder("models:/coconet@champion", project) is None
    load_fusion_model("models:/coconet@champion", CPU_FP32, project)  # MLflow's path
    assert client.get_run(stale.info.run_id).info.status == "KILLED"
    assert model_folder("models:/coconet@champion", project) is not None


def test_the_schema_revision_is_the_installed_mlflows():
    import mlflow.store.db_migrations as migrations
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    assert ScriptDirectory.from_config(config).get_heads() == [SCHEMA_REVISION]
