"""scripts/validate.py: the validation sets hold no test pair; scores, wins and deviations."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from models.contrast import OutputContrast
from pipeline.core.imageio import write_image
from pipeline.metrics import METRIC_NAMES
from scripts.validate import AUTHORS_SET, PAPER_METRICS, VAL_SET, validate, validation_pairs

PAIRS = [  # pair_id, dataset, split
    ("tno40/1", "tno40", "unused"),
    ("tno40/9", "tno40", "test"),
    ("roadscene/a", "roadscene", "val"),
    ("roadscene/b", "roadscene", "test"),
    ("roadscene/c", "roadscene", "train"),
]


@pytest.fixture
def project(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "data/raw"
    rows = []
    for pair_id, dataset, split in PAIRS:
        files = {}
        for kind in ("ir", "vis", "authors"):
            files[kind] = f"data/raw/{pair_id}-{kind}.png"
            (tmp_path / files[kind]).parent.mkdir(parents=True, exist_ok=True)
            write_image(tmp_path / files[kind], rng.uniform(0, 1, (48, 56)).astype(np.float32))
        rows.append({"pair_id": pair_id, "dataset": dataset, "split": split, **files})
    with open(raw / "index.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["pair_id", "dataset", "pair", "split", "ir", "vis"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, r["pair_id"].split("/")[1]) for k in writer.fieldnames})
    with open(raw / "published.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["published", "label", "pair_id", "fused", "url", "sha256", "method"])
        for r in rows:
            if r["dataset"] == "tno40":
                writer.writerow(["coconet_authors", "x", r["pair_id"], r["authors"], "u", "s", "m"])
    return tmp_path


def test_no_test_pair_is_ever_a_validation_pair(project):
    sets = validation_pairs(project)
    assert sets[VAL_SET]["pair_id"].tolist() == ["roadscene/a"]
    assert sets[AUTHORS_SET]["pair_id"].tolist() == ["tno40/1"]  # the authors' test pair 9: no


def test_scores_wins_and_the_deviation_from_the_authors(project, model_checkpoint):
    result = validate(model_checkpoint, project, OutputContrast(0.42, 0.25))
    assert {VAL_SET, AUTHORS_SET} == set(result)
    assert result[VAL_SET]["pairs"] == 1 and "deviation" not in result[VAL_SET]
    assert set(result[VAL_SET]["wins"]) <= set(METRIC_NAMES)
    authors = result[AUTHORS_SET]
    assert set(authors["means"]) == {"model", "average", "authors"}
    assert set(authors["deviation"]) == set(PAPER_METRICS)
    sd = authors["means"]["model"]["SD"]
    assert sd == pytest.approx(0.25 * 255, rel=0.05)  # the override's spread (some clipping)
    assert authors["deviation"]["SD"] == pytest.approx(sd / authors["means"]["authors"]["SD"] - 1)
