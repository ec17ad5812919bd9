"""The evaluate stage on a tiny synthetic test split with an untrained model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.catalogue.index import load_test_split
from pipeline.core.imageio import read_image, write_image
from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.core.paths import ProjectPaths
from pipeline.evaluation import report
from pipeline.metrics import METRIC_DIRECTION, METRIC_NAMES, compute_metrics
from pipeline.stages import evaluate
from pipeline.tracking.run_record import write_run_info
from tests.helpers.tags import repeated_facts

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


def snapshot(client, run_id: str) -> tuple:
    run = client.get_run(run_id)
    artifacts = sorted(a.path for a in client.list_artifacts(run_id))
    return run.data.metrics, run.data.params, run.data.tags, artifacts


def test_each_evaluation_is_its_own_run_and_replaces_the_reports(trained, monkeypatch):
    import mlflow

    root, uri, run_id = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow.MlflowClient(uri)
    training_before = snapshot(client, run_id)
    paths = ProjectPaths(root)
    stale = paths.evaluation / "gallery" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"from an earlier run")
    means = evaluate.run(params(), paths)

    methods = ["CoCoNet", "average", "max", "laplacian"]
    assert list(means) == ["tno40"] and list(means["tno40"]) == methods
    per_image = pd.read_csv(paths.evaluation / "per_image.csv")
    assert list(per_image.columns) == ["pair_id", "dataset", "method", *METRIC_NAMES]
    assert len(per_image) == 2 * len(methods)
    assert set(per_image["pair_id"]) == {"tno40/kayak", "tno40/bench"}  # test split only

    model_means = json.loads(paths.metrics.read_text())
    assert set(model_means) == {"tno40"} and set(model_means["tno40"]) == set(METRIC_NAMES)
    assert model_means["tno40"]["VIF"] == pytest.approx(means["tno40"]["CoCoNet"]["VIF"])
    others = json.loads(paths.comparison.read_text())
    assert set(others["tno40"]) == {"average", "max", "laplacian"}
    assert others["tno40"]["max"]["SD"] == pytest.approx(means["tno40"]["max"]["SD"])
    summary = json.loads((paths.evaluation / "summary.json").read_text())
    assert summary["test_pairs"] == {"tno40": 2} and summary["convention"] == "matlab"

    # the saved fused image rescored gives the CSV's numbers (what `coconet metrics` reports)
    fused = read_image(paths.evaluation / "fused" / "kayak.png")
    ir, vis = (read_image(root / f"data/raw/tno40/{r}/kayak.png") for r in ("ir", "vis"))
    rescored = compute_metrics(ir, vis, fused)
    row = per_image[(per_image.pair_id == "tno40/kayak") & (per_image.method == "CoCoNet")]
    for name in METRIC_NAMES:
        assert rescored[name] == pytest.approx(row[name].item(), rel=1e-5, abs=1e-6), name

    assert sorted(p.name for p in (paths.evaluation / "gallery").iterdir()) == ["bench.png"]
    text = (paths.evaluation / "report.md").read_text()
    assert "## Ranking on tno40" in text and "| Method | EN ↑ |" in text and "Nabf ↓" in text
    assert "![bench](gallery/bench.png)" in text

    first = json.loads(paths.evaluation_run.read_text())
    assert summary["mlflow_run"] == first["run_id"] != run_id
    run = client.get_run(first["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == run_id
    assert run.data.tags["coconet.run"] == "evaluation"
    assert repeated_facts(run.data.tags) == []
    assert run.data.tags["eval.test_fingerprint"] == first["test_fingerprint"]
    assert run.data.params["evaluate.convention"] == "matlab"
    metrics = run.data.metrics
    assert metrics["eval/tno40/CoCoNet/VIF"] == pytest.approx(means["tno40"]["CoCoNet"]["VIF"])
    assert metrics["eval/tno40/laplacian/Qabf"] == pytest.approx(
        means["tno40"]["laplacian"]["Qabf"]
    )
    artifacts = {a.path for a in client.list_artifacts(first["run_id"], "evaluation")}
    assert {"evaluation/report.md", "evaluation/per_image.csv", "evaluation/gallery"} <= artifacts
    assert "evaluation/per_image.json" in artifacts  # the MLflow table
    assert '"type": "table"' in run.data.tags["mlflow.loggedArtifacts"]
    table = json.loads(
        Path(client.download_artifacts(first["run_id"], "evaluation/per_image.json")).read_text()
    )
    assert len(table["data"]) == len(per_image) and table["columns"][:3] == [
        "pair_id",
        "dataset",
        "method",
    ]
    images = {a.path for a in client.list_artifacts(first["run_id"], "images")}
    assert any(path.startswith("images/gallery~bench") for path in images)
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags}
    assert "evaluation" in contexts

    # a second evaluation of one pair: a new run; nothing earlier is rewritten or mixed in
    first_before = snapshot(client, first["run_id"])
    evaluate.run(params(max_pairs=1), paths)
    second = json.loads(paths.evaluation_run.read_text())
    assert second["run_id"] != first["run_id"]
    assert second["test_fingerprint"] != first["test_fingerprint"]
    assert sorted(p.name for p in (paths.evaluation / "fused").iterdir()) == ["bench.png"]
    assert not stale.exists()
    assert snapshot(client, run_id) == training_before
    assert snapshot(client, first["run_id"]) == first_before


def test_max_pairs_caps_the_test_split(trained, tmp_path):
    root, _, _ = trained
    test = load_test_split(root / "data" / "raw" / "index.csv", max_pairs=1)
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
    assert list(means["tno40"])[:2] == ["CoCoNet", "official (reference)"]
    others = json.loads(paths.comparison.read_text())["tno40"]
    assert set(others) == {"official_reference", "average", "max", "laplacian"}
    assert json.loads((paths.evaluation / "summary.json").read_text())["precision"] == "fp32"
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


def test_every_test_set_and_the_published_view_with_its_pair_count(trained, tmp_path, monkeypatch):
    """Three test sets, a published fusion of one test pair (another of a non-test pair is left
    out), the per-set cap, the catalogue's 21/26 note."""
    import shutil

    root, _, _ = trained
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = tmp_path / "project"
    shutil.copytree(root / "artifacts", project / "artifacts")
    pairs = [("tno40", "21", "test"), ("tno40", "26", "test"), ("tno40", "9", "test"),
             ("tno40", "3", "unused"), ("roadscene", "FLIR_00006", "test"),
             ("m3fd", "00042", "test"), ("m3fd", "00150", "test")]  # fmt: skip
    rows, published = [], []
    for seed, (dataset, pair, split) in enumerate(pairs):
        vis, ir = _images(seed)
        for role, image in (("vis", vis), ("ir", ir)):
            write_image(project / f"data/raw/{dataset}/{role}/{pair}.png", image)
        rows.append({"pair_id": f"{dataset}/{pair}", "dataset": dataset, "pair": pair,
                     "split": split, "ir": f"data/raw/{dataset}/ir/{pair}.png",
                     "vis": f"data/raw/{dataset}/vis/{pair}.png", "mask": ""})  # fmt: skip
        if pair in ("9", "3"):
            fused = f"data/raw/published/coconet_authors/tno40/{pair}.png"
            write_image(project / fused, (vis + ir) / 2)
            published.append({"published": "coconet_authors", "label": "authors' results",
                              "pair_id": f"tno40/{pair}", "fused": fused, "url": "u",
                              "sha256": "s", "method": "content"})  # fmt: skip
    pd.DataFrame(rows).to_csv(project / "data/raw/index.csv", index=False)
    pd.DataFrame(published).to_csv(project / "data/raw/published.csv", index=False)
    paths = ProjectPaths(project)

    means = evaluate.run(params(max_pairs_per_set={"m3fd": 1}), paths)
    view = "tno40:coconet_authors"
    assert list(means) == ["m3fd", "roadscene", "tno40", view]  # natural order, views last
    assert "coconet_authors (reference)" not in means["tno40"]
    assert list(means[view]) == ["CoCoNet", "average", "max", "laplacian",
                                 "coconet_authors (reference)"]  # fmt: skip
    summary = json.loads((paths.evaluation / "summary.json").read_text())
    assert summary["test_pairs"] == {"m3fd": 1, "roadscene": 1, "tno40": 3, view: 1}
    per_image = pd.read_csv(paths.evaluation / "per_image.csv")
    on_nine = per_image[per_image.pair_id == "tno40/9"].set_index("method")
    for method, values in means[view].items():  # the view is exactly pair 9
        assert values["VIF"] == pytest.approx(on_nine.loc[method, "VIF"], rel=1e-5)  # %.6g CSV
    assert set(per_image.pair_id) == {"tno40/21", "tno40/26", "tno40/9",
                                      "roadscene/FLIR_00006", "m3fd/00042"}  # fmt: skip
    assert set(json.loads(paths.metrics.read_text())) == set(means)
    comparison = json.loads(paths.comparison.read_text())
    assert "coconet_authors_reference" in comparison[view]
    text = (paths.evaluation / "report.md").read_text()
    for test_set in means:
        assert f"## Ranking on {test_set}" in text
    tno40_section = text.split("## Ranking on tno40\n")[1].split("## Ranking on")[0]
    assert "pairs 21 and 26 are near-duplicates" in tno40_section
    assert "| coconet_authors (reference) |" in text
    assert "scored on the 1 tno40 test pairs it covers (9)" in text
