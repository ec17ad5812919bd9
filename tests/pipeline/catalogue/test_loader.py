"""The catalogue loader (pipeline.catalogue.loader): natural order, file lists read and
written."""

from __future__ import annotations

import pytest

from pipeline.catalogue import (
    CatalogueError,
    CatalogueFile,
    load_dataset,
    loader,
    natural_key,
    read_files_tsv,
    write_files_tsv,
)
from pipeline.catalogue.loader import DATASETS_DIR


def test_pairs_sort_numerically():
    ids = ["tno40/10", "tno40/8", "tno40/9", "a/2b"]
    assert sorted(ids, key=natural_key) == ["a/2b", "tno40/8", "tno40/9", "tno40/10"]


def test_file_lists_round_trip_in_natural_order(tmp_path):
    committed = DATASETS_DIR / "tno40.tsv"
    files = read_files_tsv(committed)
    assert write_files_tsv(tmp_path / "x.tsv", reversed(files)).read_text() == committed.read_text()
    extra = CatalogueFile("10", "vis", "incoming/10/vis.png", "0" * 64, 3)
    first = CatalogueFile("9", "ir", "incoming/9/ir.png", "1" * 64, 5)
    write_files_tsv(tmp_path / "y.tsv", [extra, first])
    assert [f.pair for f in read_files_tsv(tmp_path / "y.tsv")] == ["9", "10"]
    assert list(load_dataset("tno40").pairs())[:3] == ["1", "2", "3"]


def test_exclude_rules_name_pairs_by_table_list_or_every_nth_with_reasons():
    roadscene = load_dataset("roadscene")
    names = list(roadscene.pairs())
    assert [p for p in names if roadscene.split_of(p) == "test"] == names[::10]
    assert [p for p in names if roadscene.split_of(p) == "val"] == names[5::20]
    assert roadscene.reasons[names[0]].startswith("held-out RoadScene test pair")
    masked = load_dataset("tno_masked")
    assert {p for p in masked.pairs() if masked.split_of(p) != "train"} == {"27"}
    tno40 = load_dataset("tno40")
    assert tno40.split_of("15") == "test" and tno40.split_of("1") == "unused"
    assert any("21 and 26" in note and "near-duplicates" in note for note in tno40.notes)


def test_an_exclude_rule_naming_an_unknown_pair_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "x.tsv").write_text(
        "pair\trole\turl\tsha256\tbytes\n"
        + "".join(f"a\t{r}\thttps://h/{r}\t{'0' * 64}\t1\n" for r in ("ir", "vis"))
    )
    (tmp_path / "x.yaml").write_text(
        "split: train\nfiles: x.tsv\nexclude:\n  pairs: [b]\n  split: unused\n"
    )
    monkeypatch.setattr(loader, "DATASETS_DIR", tmp_path)
    with pytest.raises(CatalogueError, match=r"unknown pairs \['b'\]"):
        loader.load_dataset("x")
