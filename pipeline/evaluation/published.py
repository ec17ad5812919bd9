"""Published fusions as reference rows: which test pairs each published set covers, and the
test-set view (``<test set>:<published set>``) on which every method is compared with it.

A published set (``pipeline/catalogue/published``, downloaded into ``data/raw/published.csv``)
covers only some pairs, so its mean is never put beside means over a whole test set: the
evaluate stage scores it on the test pairs it covers and ranks every method on exactly those
pairs, in a view that names its pair count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.catalogue.index import PUBLISHED_INDEX_COLUMNS
from pipeline.core.errors import InputError
from pipeline.core.ordering import natural_key


@dataclass(frozen=True)
class PublishedView:
    """One published set on one test set: the method row, and the covered pairs' files."""

    key: str  # the view's name in metrics.json / comparison.json: "<test set>:<published>"
    test_set: str
    published: str
    label: str
    method: str
    fused: dict[str, str]  # pair_id -> project-relative path of the published image

    @property
    def pair_ids(self) -> set[str]:
        return set(self.fused)

    def note(self) -> str:
        pairs = ", ".join(p.split("/", 1)[1] for p in sorted(self.fused, key=natural_key))
        return (
            f"{self.method}: {self.label}, scored on the {len(self.fused)} {self.test_set} test "
            f"pairs it covers ({pairs}); every method here is ranked on those same pairs"
        )


def published_views(path: Path, test: pd.DataFrame, mark: str) -> list[PublishedView]:
    """The views of ``data/raw/published.csv`` (absent: none) on the test split ``test``;
    only pairs of the test split count. ``mark`` follows the set's name in the method row."""
    if not path.is_file():
        return []
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(PUBLISHED_INDEX_COLUMNS) - set(rows.columns)
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(sorted(missing))}")
    test_set_of = dict(zip(test["pair_id"], test["dataset"], strict=True))
    views: dict[str, PublishedView] = {}
    for row in rows.itertuples(index=False):
        test_set = test_set_of.get(row.pair_id)
        if test_set is None:
            continue
        key = f"{test_set}:{row.published}"
        view = views.setdefault(
            key,
            PublishedView(key, test_set, row.published, row.label, f"{row.published}{mark}", {}),
        )
        view.fused[row.pair_id] = row.fused
    return list(views.values())
