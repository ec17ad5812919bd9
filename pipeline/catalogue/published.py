"""Published fused images: a method's released outputs, scored as a reference, never trained on.

``pipeline/catalogue/published/<name>.yaml`` describes one set of released outputs (source at a
pinned commit, licence, what produced them); its ``<name>.tsv`` lists each file (``result, url,
sha256, bytes``) and the catalogued pair it is a fusion of (``dataset, pair``), how that was
established (``method``: ``pixel-exact`` or ``content``, see ``scripts/match_published.py``) and
the content score of the match and of the next-best pair. A result with no ``pair`` matched none.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from pipeline.catalogue.loader import (
    CATALOGUE_DIR,
    CatalogueError,
    _read_yaml,
    catalogue_entry,
    read_tsv_rows,
    url_key,
)

PUBLISHED_DIR = CATALOGUE_DIR / "published"
PUBLISHED_COLUMNS = (
    *("result", "url", "sha256", "bytes"),
    *("dataset", "pair", "method", "score", "runner_up"),
)
METHODS = ("pixel-exact", "content")


@dataclass(frozen=True)
class PublishedFile:
    """One released fused image and the catalogued pair it was made from ("" if none)."""

    result: str
    url: str
    sha256: str
    bytes: int
    dataset: str = ""
    pair: str = ""
    method: str = ""
    score: str = ""
    runner_up: str = ""

    @property
    def key(self) -> str:
        return url_key(self.url)

    @property
    def pair_id(self) -> str:
        return f"{self.dataset}/{self.pair}" if self.pair else ""

    def matched(
        self, dataset: str, pair: str, method: str, score: str, runner_up: str
    ) -> PublishedFile:
        return replace(
            self, dataset=dataset, pair=pair, method=method, score=score, runner_up=runner_up
        )


@dataclass(frozen=True)
class Published:
    """A catalogued set of released outputs."""

    name: str
    label: str  # the report's row name
    description: str
    source: str
    licence: str
    files_name: str
    files: tuple[PublishedFile, ...]

    def matches(self) -> dict[str, PublishedFile]:
        """Matched results by the pair id they fuse."""
        return {f.pair_id: f for f in self.files if f.pair_id}


def available_published() -> list[str]:
    return sorted(p.stem for p in PUBLISHED_DIR.glob("*.yaml"))


def read_published_tsv(path: Path) -> tuple[PublishedFile, ...]:
    """Read a published file list, checking columns, hashes and match methods."""
    files = []
    for number, row in read_tsv_rows(path, PUBLISHED_COLUMNS):
        if not re.fullmatch(r"[0-9a-f]{64}", row["sha256"]):
            raise CatalogueError(f"{path}:{number}: bad sha256 {row['sha256']!r}")
        if bool(row["pair"]) != bool(row["method"]) or row["method"] not in ("", *METHODS):
            raise CatalogueError(f"{path}:{number}: a match needs a pair and a method {METHODS}")
        files.append(PublishedFile(**{**row, "bytes": int(row["bytes"])}))
    ids = [f.pair_id for f in files if f.pair_id]
    if len(ids) != len(set(ids)):
        raise CatalogueError(f"{path}: two results match one pair")
    return tuple(files)


def write_published_tsv(handle: TextIO, files: Iterable[PublishedFile]) -> None:
    writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
    writer.writerow(PUBLISHED_COLUMNS)
    writer.writerows(tuple(getattr(f, c) for c in PUBLISHED_COLUMNS) for f in files)


def load_published(name: str) -> Published:
    """Load ``published/<name>.yaml`` and its file list."""
    entry = catalogue_entry(PUBLISHED_DIR, name, "published set", available_published())
    meta = _read_yaml(entry)
    return Published(
        name=name,
        label=meta.get("label", name),
        description=meta.get("description", ""),
        source=meta.get("source", ""),
        licence=meta.get("licence", ""),
        files_name=meta["files"],
        files=read_published_tsv(entry.parent / meta["files"]),
    )
