"""The evaluate stage on a tiny synthetic test split with an untrained model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.imageio import read_image, write_image
from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.core.paths import ProjectPaths
from pipeline.evaluation import report
from pipeline.metrics import METRIC_DIRECTION, METRIC_NAMES, compute_metrics
from pipeline.stages import evaluate
from pipeline.tracking.run_record import write_run_info

PAIRS = [("tno40", "kayak", "test"), ("tno40", "bench", "test"), ("tno_masked", "car", "train")]


def _images(seed: int, height: int = 48, width: int = 64) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    vis = 0.5 + 0.3 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + rng.normal(0, 0.03, xx.shape)
    ir = np.full((height, width), 0.2) + rng.normal(0, 0.02, xx.shape)
    ir[(yy - 20) ** 2 + (xx - 30) ** 2 < 60] = 0.9
    return np.clip(vis, 0, 1), np.clip(ir, 0, 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project root with a raw index, images, an untrained model.pt and a training run."""
    import mlflow

    from models.coconet import CoCoNet

    root = tmp_path_factory.mktemp("project")
    rows = []
    for seed, (dataset, pair, split) in enumerate(PAIRS):
        vis, ir = _images(seed)
        for role, image in (("vis", vis), ("ir", ir)):
            write_image(root / "data" / "raw" / dataset / role / f"{pair}.png", image)
        rows.append(
            {
                "pair_id": f"{dataset}/{pair}",
                "dataset": dataset,
                "pair": pair,
                "split": split,
                "ir": f"data/raw/{dataset}/ir/{pair}.png",
                "vis": f"data/raw/{dataset}/vis/{pair}.png",
                "mask": "",
            }
        )
    pd.DataFrame(rows).to_csv(root / "data" / "raw" / "index.csv", index=False)

    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random")
    (root / "artifacts").mkdir()
    torch.save(
        {"state_dict": model.state_dict(), "vgg_weights": "random", "params": {}},
        root / "artifacts" / "model.pt",
    )
    store = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment(
        "test-evaluate", artifact_location=(store / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    write_run_info(
        {"run_id": run.info.run_id, "tracking_uri": uri, "vgg_weights": "random"},
        root / "artifacts" / "train_run.json",
    )
    return root, uri, run.info.run_id


def params(**evaluate_section) -> Params:
    return Params.model_validate(
        {"download": {"official": "none"}, "evaluate": {"gallery_pairs": 1, **evaluate_section}}
    )


def test_evaluate_fills_reports_and_the_training_run(trained, monkeypatch):
    import mlflow

    root, uri, run_id = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = ProjectPaths(root)
    stale = paths.evaluation / "gallery" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    means = evaluate.run(params(), paths)

    methods = ["CoCoNet", "average", "max", "laplacian"]
    assert list(means) == methods
    per_image = pd.read_csv(paths.evaluation / "per_image.csv")
    assert list(per_image.columns) == ["pair_id", "method", *METRIC_NAMES]
    assert len(per_image) == 2 * len(methods)
    assert set(per_image["pair_id"]) == {"tno40/kayak", "tno40/bench"}  # test split only

    summary = json.loads(paths.metrics.read_text())
    assert summary["n_pairs"] == 2 and summary["convention"] == "matlab"
    assert summary["VIF"] == pytest.approx(means["CoCoNet"]["VIF"])
    assert set(summary["baselines"]) == {"average", "max", "laplacian"}
    assert summary["baselines"]["max"]["SD"] == pytest.approx(means["max"]["SD"])

    # the saved fused image rescored gives the CSV's numbers (what `coconet metrics` reports)
    fused = read_image(paths.evaluation / "fused" / "kayak.png")
    ir, vis = (read_image(root / f"data/raw/tno40/{r}/kayak.png") for r in ("ir", "vis"))
    rescored = compute_metrics(ir, vis, fused)
    row = per_image[(per_image.pair_id == "tno40/kayak") & (per_image.method == "CoCoNet")]
    for name in METRIC_NAMES:
        assert rescored[name] == pytest.approx(row[name].item(), rel=1e-5, abs=1e-6), name

    assert sorted(p.name for p in (paths.evaluation / "gallery").iterdir()) == ["bench.png"]
    assert (paths.evaluation / "fused" / "bench.png").is_file()
    text = (paths.evaluation / "report.md").read_text()
    assert "| Method | EN ↑ |" in text and "Nabf ↓" in text and "mean rank ↓" in text
    assert "![bench](gallery/bench.png)" in text

    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(run_id)
    assert run.data.metrics["eval_VIF"] == pytest.approx(means["CoCoNet"]["VIF"])
    assert run.data.metrics["eval_laplacian_Qabf"] == pytest.approx(means["laplacian"]["Qabf"])
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/metrics.json", "evaluation/gallery"} <= artifacts
    contexts = {
        t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"
    }
    assert "evaluation" in contexts


def test_max_pairs_caps_the_test_split(trained, tmp_path):
    root, _, _ = trained
    test = evaluate.load_test_split(root / "data" / "raw" / "index.csv", max_pairs=1)
    assert test["pair_id"].tolist() == ["tno40/bench"]


def test_missing_training_run_is_a_clear_error(trained, tmp_path):
    root, _, _ = trained
    paths = ProjectPaths(tmp_path)
    with pytest.raises(FileNotFoundError, match="run the train stage first"):
        evaluate.run(params(), paths)
    params_file = PROJECT_ROOT / "params.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.stages.evaluate",
            "--params",
            params_file,
            "--root",
            tmp_path,
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 1
    assert "train_run.json: no training run record" in result.stderr
    assert not (tmp_path / "reports").exists()


def test_ranking_table_bolds_the_best_and_ranks_methods():
    direction = {"VIF": "higher", "Nabf": "lower", "MI": "higher"}
    means = {
        "a": {"VIF": 0.9, "Nabf": 0.2, "MI": float("nan")},
        "b": {"VIF": 0.5, "Nabf": 0.1, "MI": 2.0},
        "c": {"VIF": 0.5, "Nabf": 0.3, "MI": 3.0},
    }
    ranks = report.rank_methods(means, direction)
    # MI is left out (NaN for a); b and c tie on VIF and share rank 2.5
    assert ranks == {"a": 1.5, "b": 1.75, "c": 2.75}
    table = report.ranking_table(means, direction).splitlines()
    assert table[0] == "| Method | VIF ↑ | Nabf ↓ | MI ↑ | mean rank ↓ |"
    assert table[2] == "| a | **0.9000** | 0.2000 | – | **1.50** |"
    assert table[3] == "| b | 0.5000 | **0.1000** | 2.0000 | 1.75 |"
    assert table[4].startswith("| c |") and "**3.0000**" in table[4]


def test_directions_cover_every_metric():
    assert set(METRIC_DIRECTION) == set(METRIC_NAMES)


OFFICIAL = PROJECT_ROOT.parent / "shared" / "official_coconet" / "latest.pth"


@pytest.mark.skipif(not OFFICIAL.is_file(), reason=f"no official-format checkpoint at {OFFICIAL}")
def test_the_official_model_is_scored_beside_ours_as_a_reference(trained, monkeypatch):
    from models.official import save_converted

    root, _, _ = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = ProjectPaths(root)
    save_converted(OFFICIAL, paths.official_model, vgg_weights="random")
    try:
        means = evaluate.run(params(references=["official"], precision="fp32"), paths)
    finally:
        paths.official_model.unlink()
    assert list(means)[:2] == ["CoCoNet", "official (reference)"]
    summary = json.loads(paths.metrics.read_text())
    assert set(summary["references"]) == {"official"}
    assert set(summary["baselines"]) == {"average", "max", "laplacian"}
    assert summary["precision"] == "fp32"
    text = (paths.evaluation / "report.md").read_text()
    assert "| official (reference) |" in text and "references" in text


def test_references_follow_the_download_unless_set():
    paper = Params()
    assert evaluate.reference_names(paper) == ["official"]
    offline = Params.model_validate({"download": {"official": "none"}})
    assert evaluate.reference_names(offline) == []
    assert evaluate.reference_names(params(references=[])) == []


def test_a_missing_reference_model_is_a_clear_error(trained, monkeypatch):
    root, _, _ = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(evaluate.InputError, match="coconet_official.pt: no official model"):
        evaluate.run(params(references=["official"]), ProjectPaths(root))
