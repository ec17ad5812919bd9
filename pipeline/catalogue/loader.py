"""The dataset and weights catalogue: every file by its pinned public URL and checksum.

``pipeline/catalogue/datasets/<name>.yaml`` describes one dataset (source, licence, split) and
names its file list ``<name>.tsv`` (columns pair, role, url, sha256, bytes; role is ir, vis or
mask). Adding a dataset is adding these two files; the TSV can be built from a manifest of
URLs and hashes with ``python -m pipeline.catalogue import <name> --manifest MANIFEST.tsv``.
An entry with ``local: true`` names files by their path relative to the project root instead
of a URL (pairs ingested by the retrain flow); they are verified the same way.
``pipeline/catalogue/weights.yaml`` lists the pretrained weight files.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.errors import CoconetError
from pipeline.core.ordering import natural_key

CATALOGUE_DIR = Path(__file__).resolve().parent
DATASETS_DIR = CATALOGUE_DIR / "datasets"
WEIGHTS_FILE = CATALOGUE_DIR / "weights.yaml"
ROLES = ("ir", "vis", "mask")
SPLITS = ("train", "val", "test", "unused")  # val: held out for model selection, never a test
TSV_COLUMNS = ("pair", "role", "url", "sha256", "bytes")


class CatalogueError(CoconetError, ValueError):
    """A catalogue entry is missing or inconsistent."""


@dataclass(frozen=True)
class CatalogueFile:
    """One file of a dataset: its role in a pair, pinned URL and sha256."""

    pair: str
    role: str
    url: str
    sha256: str
    bytes: int

    @property
    def key(self) -> str:
        """Cache-relative path: the URL without its scheme (``HOST/PATH``)."""
        return url_key(self.url)


@dataclass(frozen=True)
class Dataset:
    """A catalogued dataset: metadata, its files grouped into pairs, and its split rule."""

    name: str
    description: str
    source: str
    licence: str
    split: str
    files: tuple[CatalogueFile, ...]
    excluded: dict[str, str] = field(default_factory=dict)  # pair -> split (e.g. unused)
    local: bool = False  # files are project-relative paths, not URLs
    reasons: dict[str, str] = field(default_factory=dict)  # pair -> why it left the split
    notes: tuple[str, ...] = ()  # what an evaluation report on this dataset must say
    reference: str = ""  # a published set whose result named like a pair is its fusion

    def pairs(self) -> dict[str, dict[str, CatalogueFile]]:
        """Files grouped by pair name, sorted naturally (2 before 10)."""
        grouped: dict[str, dict[str, CatalogueFile]] = {}
        for entry in self.files:
            grouped.setdefault(entry.pair, {})[entry.role] = entry
        return {name: grouped[name] for name in sorted(grouped, key=natural_key)}

    def split_of(self, pair: str) -> str:
        """The split of one pair: the dataset's split unless the pair is excluded."""
        return self.excluded.get(pair, self.split)


@dataclass(frozen=True)
class Weight:
    """A pretrained weight file: URL, pooch-style known hash, and where it goes."""

    family: str
    variant: str
    url: str
    known_hash: str
    target: str
    bytes: int | None = None

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def url_key(url: str) -> str:
    """``https://HOST/PATH`` -> ``HOST/PATH`` (the layout of the mirror and of the cache)."""
    scheme, sep, rest = url.partition("://")
    if not sep or not rest:
        raise CatalogueError(f"{url}: not an absolute URL")
    return rest


def available_datasets() -> list[str]:
    """Names of all catalogued datasets."""
    return sorted(p.stem for p in DATASETS_DIR.glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot read catalogue entry: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: a catalogue entry must be a mapping")
    return data


def read_tsv_rows(path: Path, columns: Iterable[str]) -> list[tuple[int, dict[str, str]]]:
    """A catalogue TSV's rows with their line numbers; an unreadable file or a missing column
    is a :class:`CatalogueError` naming the file."""
    columns = tuple(columns)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except OSError as exc:
        raise CatalogueError(f"{path}: cannot read file list: {exc}") from exc
    for row in rows:
        if set(columns) - set(row):
            raise CatalogueError(f"{path}: columns must be {', '.join(columns)}")
    return list(enumerate(rows, start=2))


def read_files_tsv(path: Path) -> tuple[CatalogueFile, ...]:
    """Read a dataset's file list, checking columns, roles and hashes."""
    files = []
    for number, row in read_tsv_rows(path, TSV_COLUMNS):
        if row["role"] not in ROLES or not re.fullmatch(r"[0-9a-f]{64}", row["sha256"]):
            raise CatalogueError(f"{path}:{number}: bad role or sha256 in {row}")
        files.append(
            CatalogueFile(row["pair"], row["role"], row["url"], row["sha256"], int(row["bytes"]))
        )
    return tuple(files)


def write_files_tsv(path: Path, files: Iterable[CatalogueFile]) -> Path:
    """Write a dataset's file list (the columns of :func:`read_files_tsv`), sorted by pair
    (naturally) and role."""
    rows = sorted(files, key=lambda f: (natural_key(f.pair), ROLES.index(f.role)))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(TSV_COLUMNS)
        writer.writerows((f.pair, f.role, f.url, f.sha256, f.bytes) for f in rows)
    return path


def _rule_pairs(rule: dict, names: list[str], entry: Path) -> list[str]:
    """The pairs one ``exclude`` rule names: from a table column, a list, or every Nth pair."""
    if "table" in rule:
        pattern = re.compile(rule["pattern"])
        with (CATALOGUE_DIR / rule["table"]).open(newline="") as handle:
            values = [row[rule["column"]] for row in csv.DictReader(handle, delimiter="\t")]
        return [m["pair"] for v in values if (m := pattern.match(v))]
    if "pairs" in rule:
        unknown = sorted(set(map(str, rule["pairs"])) - set(names))
        if unknown:
            raise CatalogueError(f"{entry}: exclude names unknown pairs {unknown}")
        return [str(p) for p in rule["pairs"]]
    if "every" in rule:  # every Nth pair in natural name order, from the offset-th (0-based)
        return names[int(rule.get("offset", 0)) :: int(rule["every"])]
    raise CatalogueError(f"{entry}: an exclude rule needs table, pairs or every")


def _excluded_pairs(
    rules: dict | list[dict], names: list[str], entry: Path
) -> tuple[dict[str, str], dict[str, str]]:
    """``exclude`` (one rule or a list, applied in order, the first naming a pair wins):
    pair -> split, and pair -> reason."""
    splits: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for rule in [rules] if isinstance(rules, dict) else rules:
        split = rule.get("split", "unused")
        if split not in SPLITS:
            raise CatalogueError(f"{entry}: exclude.split must be one of {SPLITS}")
        for pair in _rule_pairs(rule, names, entry):
            if pair not in splits:
                splits[pair] = split
                reasons[pair] = rule.get("reason", "")
    return splits, reasons


def catalogue_entry(folder: Path, name: str, kind: str, known: Iterable[str]) -> Path:
    """``folder/<name>.yaml``; a missing one is an error naming the ``known`` entries."""
    entry = folder / f"{name}.yaml"
    if not entry.is_file():
        raise CatalogueError(
            f"unknown {kind} {name!r}: no {entry} (catalogued: {', '.join(known)})"
        )
    return entry


def load_dataset(name: str) -> Dataset:
    """Load one catalogue entry; every pair must have infrared and visible files."""
    entry = catalogue_entry(DATASETS_DIR, name, "dataset", available_datasets())
    meta = _read_yaml(entry)
    if meta.get("split") not in ("train", "val", "test"):
        raise CatalogueError(f"{entry}: split must be train, val or test")
    files = read_files_tsv(entry.parent / meta["files"])
    names = sorted({f.pair for f in files}, key=natural_key)
    excluded, reasons = _excluded_pairs(meta.get("exclude") or [], names, entry)
    dataset = Dataset(
        name=name,
        description=meta.get("description", ""),
        source=meta.get("source", ""),
        licence=meta.get("licence", ""),
        split=meta["split"],
        files=files,
        excluded=excluded,
        local=bool(meta.get("local", False)),
        reasons=reasons,
        notes=tuple(str(n) for n in meta.get("notes", ())),
        reference=str(meta.get("reference", "")),
    )
    incomplete = [p for p, roles in dataset.pairs().items() if not {"ir", "vis"} <= set(roles)]
    if incomplete:
        raise CatalogueError(f"{entry}: pairs lacking ir or vis files: {incomplete[:10]}")
    return dataset


def load_weights() -> dict[tuple[str, str], Weight]:
    """All catalogued weights keyed by (family, variant), e.g. ("sam", "vit_b")."""
    data = _read_yaml(WEIGHTS_FILE)
    return {
        (family, variant): Weight(
            family=family,
            variant=variant,
            url=spec["url"],
            known_hash=spec["hash"],
            target=spec["target"],
            bytes=spec.get("bytes"),
        )
        for family, variants in data.items()
        for variant, spec in variants.items()
    }


def import_manifest(name: str, manifest: Path) -> Path:
    """Write ``<name>.tsv`` from a manifest (url, sha256, bytes) using the entry's import rule."""
    entry = DATASETS_DIR / f"{name}.yaml"
    meta = _read_yaml(entry)
    rule = meta["import"]
    pattern, roles = re.compile(rule["pattern"]), rule["roles"]
    files = []
    with Path(manifest).open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if match := pattern.match(row["url"]):
                role = roles[match["role"]]
                files.append(
                    CatalogueFile(match["pair"], role, row["url"], row["sha256"], int(row["bytes"]))
                )
    if not files:
        raise CatalogueError(f"{manifest}: no URL matches the import pattern of {entry}")
    return write_files_tsv(entry.parent / meta["files"], files)


def main(argv: list[str] | None = None) -> None:
    """``python -m pipeline.catalogue import NAME --manifest PATH``: rebuild a file list."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="build datasets/<name>.tsv from a manifest")
    imp.add_argument("name")
    imp.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args(argv)
    target = import_manifest(args.name, args.manifest)
    print(f"wrote {target} ({len(load_dataset(args.name).pairs())} pairs)")


if __name__ == "__main__":
    main()
