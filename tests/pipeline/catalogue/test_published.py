"""Published fusions in the catalogue (pipeline.catalogue.published): the authors' results load,
their matches are pairs of the catalogue, a malformed list is refused."""

from __future__ import annotations

import io

import pytest

from pipeline.catalogue import CatalogueError, load_dataset
from pipeline.catalogue.published import (
    PUBLISHED_COLUMNS,
    load_published,
    read_published_tsv,
    write_published_tsv,
)


def test_the_authors_results_match_14_tno40_pairs_6_of_them_test_pairs():
    published = load_published("coconet_authors")
    assert len(published.files) == 37 and all(f.url.endswith(".bmp") for f in published.files)
    matches = published.matches()
    tno40 = load_dataset("tno40")
    assert sorted(int(p.split("/")[1]) for p in matches) == [
        *(1, 2, 3, 9, 13, 16, 17, 20, 29, 30, 31, 37, 38, 39)
    ]
    in_test = {p for p in matches if tno40.split_of(p.split("/")[1]) == "test"}
    assert in_test == {f"tno40/{n}" for n in (9, 13, 29, 31, 37, 38)}
    exact = {p for p, f in matches.items() if f.method == "pixel-exact"}
    assert exact == in_test  # the six pixel-exact matches are exactly the test pairs covered
    for f in matches.values():  # a clear fit, far above the next pair
        assert float(f.score) >= 0.8 and float(f.score) - float(f.runner_up) >= 0.3


def test_written_lists_read_back_and_bad_rows_are_refused(tmp_path):
    files = load_published("coconet_authors").files
    buffer = io.StringIO()
    write_published_tsv(buffer, files)
    (tmp_path / "ok.tsv").write_text(buffer.getvalue())
    assert read_published_tsv(tmp_path / "ok.tsv") == files
    header = "\t".join(PUBLISHED_COLUMNS) + "\n"
    row = ["r", "https://h/r.bmp", "0" * 64, "1", "tno40", "9", "guess", "", ""]
    (tmp_path / "bad.tsv").write_text(header + "\t".join(row) + "\n")
    with pytest.raises(CatalogueError, match="a match needs a pair and a method"):
        read_published_tsv(tmp_path / "bad.tsv")
    twice = [row[:6] + ["content", "", ""], ["s", *row[1:6], "content", "", ""]]
    (tmp_path / "twice.tsv").write_text(header + "".join("\t".join(r) + "\n" for r in twice))
    with pytest.raises(CatalogueError, match="two results match one pair"):
        read_published_tsv(tmp_path / "twice.tsv")
    with pytest.raises(CatalogueError, match="unknown published set"):
        load_published("nope")
