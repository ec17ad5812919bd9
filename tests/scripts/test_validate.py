"""scripts/validate.py: the validation sets hold no test pair; scores, wins and deviations;
extra validation datasets from the catalogue (m3fd_val; tno_authors with the authors' fusions)."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest

import scripts.validate as validate_script
from flows.inbox.guard import NEAR_DUPLICATE_NCC
from models.contrast import OutputContrast
from pipeline.catalogue import load_dataset
from pipeline.catalogue.loader import CATALOGUE_DIR, CatalogueFile, Dataset, url_key
from pipeline.catalogue.published import Published, PublishedFile, load_published
from pipeline.core.imageio import write_image
from pipeline.core.params import load_params
from pipeline.metrics import METRIC_NAMES
from scripts.validate import (
    ALL_AUTHORS,
    AUTHORS_SET,
    PAPER_METRICS,
    VAL_SET,
    extra_pairs,
    validate,
    validation_pairs,
)

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
    assert set(authors["authors_wins"]) <= set(METRIC_NAMES)
    assert "Nabf" not in authors["authors_wins"]  # beating means less here: the average's is 0


def _mirrored(tmp_path, url: str, rng) -> tuple[str, int]:
    """Write a random image at ``url``'s place in a folder mirror: its sha256 and size."""
    path = tmp_path / "mirror" / url_key(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(path, rng.uniform(0, 1, (48, 56)).astype(np.float32))
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_size


def _val_dataset(tmp_path, split="val", pairs=("p1", "p2"), **fields):
    """A catalogue dataset whose files sit in a folder mirror (HOST/PATH)."""
    rng = np.random.default_rng(1)
    files = []
    for pair in pairs:
        for role in ("ir", "vis"):
            url = f"https://example.org/m3fd/{role}/{pair}.png"
            files.append(CatalogueFile(pair, role, url, *_mirrored(tmp_path, url, rng)))
    return Dataset("fake_val", "", "", "", split, tuple(files), **fields)


def test_an_extra_validation_set_is_fetched_checked_and_scored(
    project, tmp_path, monkeypatch, model_checkpoint
):
    dataset = _val_dataset(tmp_path)
    monkeypatch.setattr(validate_script, "load_dataset", lambda name: dataset)
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    result = validate(
        model_checkpoint, project, extra=("fake_val",), mirror=str(tmp_path / "mirror")
    )
    assert result["fake_val"]["pairs"] == 2
    assert set(result["fake_val"]["means"]) == {"model", "average"}
    assert (tmp_path / "cache" / "example.org/m3fd/ir/p1.png").is_file()  # verified, kept


def test_an_extra_set_with_a_reference_scores_its_val_pairs_against_the_released_fusions(
    project, tmp_path, monkeypatch, model_checkpoint
):
    dataset = _val_dataset(
        tmp_path, pairs=("p1", "p2", "p3"), excluded={"p2": "unused"}, reference="released"
    )
    rng = np.random.default_rng(2)
    released = []
    for pair in ("p1", "p2", "p3"):
        url = f"https://example.org/released/{pair}.png"
        released.append(PublishedFile(pair, url, *_mirrored(tmp_path, url, rng)))
    published = Published("released", "x", "", "", "", "released.tsv", tuple(released))
    monkeypatch.setattr(validate_script, "load_dataset", lambda name: dataset)
    monkeypatch.setattr(validate_script, "load_published", lambda name: published)
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    mirror = str(tmp_path / "mirror")
    rows = extra_pairs("fake_val", project, mirror)
    assert rows["pair_id"].tolist() == ["fake_val/p1", "fake_val/p3"]  # the unused p2: no
    assert rows["published"].iloc[1].name == "p3.png"
    result = validate(model_checkpoint, project, extra=("fake_val",), mirror=mirror)
    extra, authors, pooled = result["fake_val"], result[AUTHORS_SET], result[ALL_AUTHORS]
    assert set(extra["means"]) == {"model", "average", "authors"} and extra["pairs"] == 2
    assert pooled["pairs"] == authors["pairs"] + 2 == 3
    for metric in PAPER_METRICS:  # the pooled means weigh every pair alike
        released_means = authors["means"]["authors"][metric], extra["means"]["authors"][metric]
        pair_mean = (released_means[0] + 2 * released_means[1]) / 3
        assert pooled["means"]["authors"][metric] == pytest.approx(pair_mean)
        pooled_model = pooled["means"]["model"][metric]
        assert pooled["deviation"][metric] == pytest.approx(pooled_model / pair_mean - 1)


def test_an_extra_set_without_its_released_fusions_is_refused(project, tmp_path, monkeypatch):
    dataset = _val_dataset(tmp_path, reference="released")
    published = Published("released", "x", "", "", "", "released.tsv", ())
    monkeypatch.setattr(validate_script, "load_dataset", lambda name: dataset)
    monkeypatch.setattr(validate_script, "load_published", lambda name: published)
    with pytest.raises(SystemExit, match=r"no released result for pairs \['p1', 'p2'\]"):
        extra_pairs("fake_val", project, str(tmp_path / "mirror"))


def test_an_extra_set_with_test_pairs_or_test_files_is_refused(project, tmp_path, monkeypatch):
    mirror = str(tmp_path / "mirror")
    monkeypatch.setattr(
        validate_script, "load_dataset", lambda name: _val_dataset(tmp_path, "test")
    )
    with pytest.raises(SystemExit, match="not validation pairs"):
        extra_pairs("fake_val", project, mirror)
    dataset = _val_dataset(tmp_path)
    monkeypatch.setattr(validate_script, "load_dataset", lambda name: dataset)
    index = project / "data/raw/index.csv"
    rows = list(csv.DictReader(index.open()))
    for row in rows:
        row["ir_sha256"] = dataset.files[0].sha256 if row["split"] == "test" else ""
    with index.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(SystemExit, match="also test pairs' files"):
        extra_pairs("fake_val", project, mirror)


def test_m3fd_val_is_all_validation_and_shares_nothing_with_the_m3fd_test_pairs():
    val, test = load_dataset("m3fd_val"), load_dataset("m3fd")
    assert len(val.pairs()) == 30 and {val.split_of(p) for p in val.pairs()} == {"val"}
    assert not set(val.pairs()) & set(test.pairs())
    assert not {f.sha256 for f in val.files} & {f.sha256 for f in test.files}
    assert "m3fd_val" not in load_params().download.datasets  # never downloaded by the pipeline


def test_tno_authors_val_pairs_are_no_test_scene_and_each_has_the_authors_fusion():
    """The split rules of tno_authors agree with its scene table (scripts/match_scenes.py): a
    pair is validation exactly when no image of it is a near-duplicate of a test image and it
    is not a tno40 pair the authors' fusions are already matched to."""
    dataset, authors = load_dataset("tno_authors"), load_published("coconet_authors")
    with (CATALOGUE_DIR / "tno_authors_scenes.tsv").open(newline="") as handle:
        scenes = {row["pair"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert set(scenes) == set(dataset.pairs()) == {f.result for f in authors.files}
    matched = {f.result for f in authors.files if f.pair_id}
    val = {p for p in dataset.pairs() if dataset.split_of(p) == "val"}
    assert val == {
        p for p, row in scenes.items()
        if float(row["test_score"]) < NEAR_DUPLICATE_NCC and p not in matched
    }  # fmt: skip
    assert len(val) == 18 and dataset.reference == "coconet_authors"
    assert {dataset.split_of(p) for p in set(dataset.pairs()) - val} == {"unused"}
    assert "tno_authors" not in load_params().download.datasets  # never downloaded or trained on


def test_a_file_missing_from_the_mirror_is_one_clear_error(project, tmp_path, monkeypatch):
    dataset = _val_dataset(tmp_path)
    monkeypatch.setattr(validate_script, "load_dataset", lambda name: dataset)
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mirror" / dataset.files[0].key).unlink()
    argv = ["model.pt", "--root", str(project), "--extra", "fake_val"]
    with pytest.raises(
        SystemExit, match=r"^error: cannot fetch https://example.org/m3fd/ir/p1.png"
    ):
        validate_script.main([*argv, "--mirror", str(tmp_path / "mirror")])
