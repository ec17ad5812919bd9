"""``data/raw/index.csv``: every downloaded pair with its dataset, split, local files, source
URLs and sha256s (written by the download stage, read by every later one)."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from pipeline.core.errors import InputError
from pipeline.core.ordering import natural_key

INDEX_COLUMNS = [
    *("pair_id", "dataset", "pair", "split", "width", "height", "ir", "vis", "mask"),
    *("ir_url", "vis_url", "mask_url", "ir_sha256", "vis_sha256", "mask_sha256"),
]
# ``data/raw/published.csv``: published fusions of downloaded pairs (pipeline/catalogue/published)
PUBLISHED_INDEX_COLUMNS = ["published", "label", "pair_id", "fused", "url", "sha256", "method"]


def read_index(path: Path) -> list[dict[str, str]]:
    """Rows of an index CSV (``data/raw/index.csv`` or ``data/masks/index.csv``)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the upstream stages first")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def dataset_counts(rows: list[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Pairs per dataset and split: ``{dataset: {split: n}}``."""
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(row["dataset"], Counter())[row["split"]] += 1
    return {name: dict(sorted(c.items())) for name, c in sorted(counts.items())}


def load_test_split(
    index_path: Path, max_pairs: int | None = None, per_set: Mapping[str, int] | None = None
) -> pd.DataFrame:
    """The test split of ``data/raw/index.csv``, in natural pair order, each test set (dataset)
    capped at ``per_set[test set]``, else at ``max_pairs``."""
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{index_path}: no dataset index; run the download stage first (dvc repro download)"
        )
    index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    missing = {"pair_id", "dataset", "pair", "split", "ir", "vis"} - set(index.columns)
    if missing:
        raise InputError(f"{index_path}: missing columns {', '.join(sorted(missing))}")
    test = index[index["split"] == "test"]
    if test.empty:
        raise InputError(f"{index_path}: no pair has split == test")
    order = sorted(range(len(test)), key=lambda i: natural_key(test["pair_id"].iloc[i]))
    test = test.iloc[order]
    per_set = per_set or {}
    if max_pairs or per_set:
        rank = test.groupby("dataset", sort=False).cumcount()
        cap = test["dataset"].map(lambda d: per_set.get(d, max_pairs) or len(test))
        test = test[rank < cap]
    return test.reset_index(drop=True)


def output_names(test: pd.DataFrame) -> list[str]:
    """File stems for the outputs: the pair name, or the pair id flattened if names repeat."""
    pairs = test["pair"].tolist()
    if len(set(pairs)) == len(pairs):
        return pairs
    return [pid.replace("/", "__") for pid in test["pair_id"]]
