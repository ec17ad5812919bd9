"""The catalogue loader (pipeline.catalogue.loader): natural order, file lists read and
written."""

from __future__ import annotations

from pipeline.catalogue import (
    CatalogueFile,
    load_dataset,
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
