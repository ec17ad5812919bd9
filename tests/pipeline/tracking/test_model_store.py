"""Models read through MLflow (:func:`load_registered_model`, the path taken where the light
SQLite read cannot answer): the weights come back in eval mode, and a URI that names nothing or
a damaged model is one error naming the URI and the file inside the model, never the temporary
download folder."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.utils.file_utils import local_file_uri_to_path

from models.state import fusion_state
from pipeline.tracking import pyfunc_model
from pipeline.tracking.model_store import ModelStoreError, load_registered_model


@pytest.fixture(scope="module")
def logged(random_model, mlflow_store, tmp_path_factory) -> dict[str, str]:
    """Two runs with pyfunc models: ``good`` holds ``random_model``, ``damaged`` a config.json
    that is not this format's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
        mlflow.set_tracking_uri(mlflow_store)
        art = tmp_path_factory.mktemp("artifacts").as_uri()
        experiment = mlflow.create_experiment("model-store", artifact_location=art)
        runs = {}
        for name, model in (("good", random_model), ("damaged", torch.nn.Linear(2, 1))):
            with mlflow.start_run(experiment_id=experiment) as run:
                info = pyfunc_model.log_model(model, {"vgg_weights": "random"})
            runs[name] = f"runs:/{run.info.run_id}/model"
        logged_model = mlflow.MlflowClient().get_logged_model(info.model_id)
        folder = Path(local_file_uri_to_path(logged_model.artifact_location))
        (folder / "data/coconet/config.json").write_text("{}")
    return runs


@pytest.fixture
def runs(logged, tracking_env) -> dict[str, str]:
    return logged


def test_a_run_uri_loads_the_fusion_weights_in_eval_mode(runs, random_model):
    model = load_registered_model(runs["good"])
    assert not model.training and model.vgg_weights == "random"
    expected = fusion_state(random_model.state_dict())
    state = model.state_dict()
    assert set(state) == set(expected)
    assert all(torch.equal(value, expected[key]) for key, value in state.items())


def test_a_uri_naming_nothing_is_one_error_naming_it(runs):
    with pytest.raises(ModelStoreError) as info:
        load_registered_model("models:/nothing@champion")
    assert str(info.value).startswith("models:/nothing@champion: cannot load the MLflow model (")
    assert isinstance(info.value, ValueError)


def test_a_damaged_model_names_the_file_inside_it_not_the_download_folder(runs):
    with pytest.raises(ModelStoreError) as info:
        load_registered_model(runs["damaged"])
    message = str(info.value)
    assert message.startswith(f"{runs['damaged']}: ")
    assert "data/coconet/config.json: not a " in message
    assert "coconet-model-" not in message  # the temporary copy's name is stripped
