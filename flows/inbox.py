"""Inbox ingestion: verified new pairs become the ``inbox`` dataset of the catalogue.

Layout of the inbox (default ``<project>/inbox``, ``$COCONET_INBOX`` or ``--inbox`` to change)::

    inbox/<pair>/ir.<ext>     infrared image           (png, bmp, jpg, tif, ...)
    inbox/<pair>/vis.<ext>    visible image, same size (grey or colour)
    inbox/<pair>/mask.<ext>   optional salient-target mask (0/255), same size

A pair is accepted when its folder name is a safe name (letters, digits, ``_ . -``), it has
exactly one ``ir`` and one ``vis`` image (and at most one ``mask``), every file is readable
and all sizes match. Rejected pairs stay where they are and are reported on every run.

Ingestion copies the accepted files, byte for byte, to ``incoming/<pair>/`` (tracked by DVC:
``dvc add incoming`` -> ``incoming.dvc``), appends their repo-relative paths, sha256s and
sizes to the catalogue's ``pipeline/catalogue/datasets/inbox.tsv`` (entry ``inbox.yaml``,
``local: true``, split train) and lists ``inbox`` in ``download.datasets``. The catalogue is a
dependency of the download stage, so ``dvc repro`` sees the new pairs. The inbox folders are
deleted only after the whole pipeline succeeded; a failure restores the catalogue, params and
``incoming/`` as they were (:func:`rollback`).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pooch

from pipeline.core.paths import ProjectPaths

DATASET = "inbox"
STORE = Path("incoming")
INBOX_ENV = "COCONET_INBOX"
ROLES = ("ir", "vis", "mask")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
TSV_COLUMNS = ("pair", "role", "url", "sha256", "bytes")
ENTRY_YAML = """\
# Pairs ingested from the inbox by the retrain flow (flows/inbox.py); files are kept,
# byte for byte, in incoming/ (tracked by DVC: incoming.dvc). Do not edit by hand.
name: inbox
description: user-supplied infrared/visible pairs ingested from the inbox
source: local files (inbox/<pair>/{ir,vis}.<ext> -> incoming/<pair>/, DVC-tracked)
licence: as supplied by the user
split: train
local: true
files: inbox.tsv
"""


@dataclass(frozen=True)
class InboxPair:
    """One verified pair waiting in the inbox."""

    name: str
    folder: Path
    files: dict[str, Path]
    sha256: dict[str, str]


@dataclass
class Snapshot:
    """What ingestion changed, to undo it if the run fails."""

    texts: dict[Path, str | None] = field(default_factory=dict)
    new_dirs: list[Path] = field(default_factory=list)


def default_inbox(root: Path) -> Path:
    """``$COCONET_INBOX`` or ``<root>/inbox``."""
    return Path(os.environ.get(INBOX_ENV) or ProjectPaths(root).inbox)


def verify_pair(folder: Path) -> InboxPair:
    """Check one inbox folder; raises ValueError naming the problem."""
    from pipeline.core.imageio import IMAGE_SUFFIXES, ImageError, read_image

    if not NAME_RE.match(folder.name):
        raise ValueError("folder name must be letters, digits, '_', '.', '-' (max 100)")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        role = path.stem.lower()
        if role not in ROLES or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"unexpected file {path.name} (want ir.<ext>, vis.<ext>, mask.<ext>)")
        if role in files:
            raise ValueError(f"two {role} images: {files[role].name}, {path.name}")
        files[role] = path
    missing = [r for r in ("ir", "vis") if r not in files]
    if missing:
        raise ValueError(f"missing {' and '.join(missing)} image")
    sizes = {}
    for role, path in files.items():
        try:
            sizes[role] = read_image(path).shape[:2]
        except ImageError as exc:
            raise ValueError(str(exc)) from exc
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"{r} {w}x{h}" for r, (h, w) in sizes.items())
        raise ValueError(f"sizes differ: {shown}")
    digests = {role: pooch.file_hash(str(path), alg="sha256") for role, path in files.items()}
    return InboxPair(folder.name, folder, files, digests)


def scan_inbox(inbox: Path) -> tuple[list[InboxPair], dict[str, str]]:
    """Accepted pairs and ``{entry: reason}`` for everything rejected."""
    pairs: list[InboxPair] = []
    rejected: dict[str, str] = {}
    if not inbox.is_dir():
        return pairs, rejected
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            rejected[entry.name] = "not a folder: put each pair in inbox/<pair>/{ir,vis}.<ext>"
            continue
        try:
            pairs.append(verify_pair(entry))
        except (ValueError, OSError) as exc:
            rejected[entry.name] = str(exc)
    return pairs, rejected


def catalogue_paths(root: Path) -> tuple[Path, Path]:
    """(``inbox.yaml``, ``inbox.tsv``) in the project's catalogue."""
    folder = root / "pipeline" / "catalogue" / "datasets"
    return folder / f"{DATASET}.yaml", folder / f"{DATASET}.tsv"


def read_catalogue(root: Path) -> list[dict[str, str]]:
    """Rows already in ``inbox.tsv`` (empty if none)."""
    _, tsv = catalogue_paths(root)
    if not tsv.is_file():
        return []
    with open(tsv, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def plan(
    pairs: list[InboxPair], root: Path
) -> tuple[list[InboxPair], list[InboxPair], dict[str, str]]:
    """Split accepted pairs into (new, already ingested with identical files, conflicts)."""
    known: dict[str, dict[str, str]] = {}
    for row in read_catalogue(root):
        known.setdefault(row["pair"], {})[row["role"]] = row["sha256"]
    new, duplicate, conflicts = [], [], {}
    for pair in pairs:
        if pair.name not in known:
            new.append(pair)
        elif known[pair.name] == pair.sha256:
            duplicate.append(pair)
        else:
            conflicts[pair.name] = "a different pair with this name was ingested before; rename it"
    return new, duplicate, conflicts


def _remember(snapshot: Snapshot, path: Path) -> None:
    if path not in snapshot.texts:
        snapshot.texts[path] = path.read_text() if path.is_file() else None


def ingest(pairs: list[InboxPair], root: Path) -> Snapshot:
    """Copy pairs into ``incoming/``, extend the catalogue and params, ``dvc add incoming``."""
    from dvc.utils.serialize import modify_yaml

    from flows.dvc_cli import run_dvc

    snapshot = Snapshot()
    entry, tsv = catalogue_paths(root)
    for path in (entry, tsv, ProjectPaths(root).params, root / f"{STORE}.dvc"):
        _remember(snapshot, path)
    try:
        rows = read_catalogue(root)
        for pair in pairs:
            target = root / STORE / pair.name
            snapshot.new_dirs.append(target)
            target.mkdir(parents=True)
            for role, src in pair.files.items():
                dst = target / f"{role}{src.suffix.lower()}"
                shutil.copyfile(src, dst)
                rows.append(
                    {
                        "pair": pair.name,
                        "role": role,
                        "url": (STORE / pair.name / dst.name).as_posix(),
                        "sha256": pair.sha256[role],
                        "bytes": str(dst.stat().st_size),
                    }
                )
        if not entry.is_file():
            entry.write_text(ENTRY_YAML)
        rows.sort(key=lambda r: (r["pair"], ROLES.index(r["role"])))
        with open(tsv, "w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=TSV_COLUMNS, delimiter="\t", lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(rows)
        with modify_yaml(ProjectPaths(root).params) as params:
            datasets = params.setdefault("download", {}).setdefault("datasets", [])
            if DATASET not in datasets:
                datasets.append(DATASET)
        run_dvc(["add", str(STORE)], root)
    except BaseException:
        rollback(snapshot)
        raise
    return snapshot


def rollback(snapshot: Snapshot) -> None:
    """Undo :func:`ingest`: restore the files it edited and delete the copies it made."""
    for path, text in snapshot.texts.items():
        if text is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(text)
    for folder in snapshot.new_dirs:
        shutil.rmtree(folder, ignore_errors=True)


def clear_inbox(pairs: list[InboxPair]) -> None:
    """Delete ingested pairs from the inbox (called only after a successful run)."""
    for pair in pairs:
        shutil.rmtree(pair.folder)
