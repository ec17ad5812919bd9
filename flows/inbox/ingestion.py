"""Ingesting accepted inbox pairs into the catalogue's ``inbox`` dataset, and undoing it.

A new pair is refused when an ``ir``/``vis`` file is byte-identical (sha256) to a catalogued or
already ingested file, and when an image is a near-duplicate of a test image
(:mod:`flows.inbox.guard`). Ingestion copies the accepted files, byte for byte and re-hashed
while copying, to ``incoming/<pair>/`` (tracked by DVC: ``dvc add incoming`` ->
``incoming.dvc``), appends their repo-relative paths, sha256s and sizes to the catalogue's
``pipeline/catalogue/datasets/inbox.tsv`` (entry ``inbox.yaml``, ``local: true``, split train)
and lists ``inbox`` in ``download.datasets`` of ``conf/config.yaml`` (so that ``dvc exp run
-S`` recomposing ``params.yaml`` keeps it) and of ``params.yaml``. The catalogue is a dependency
of the download stage, so ``dvc repro`` sees the new pairs. The inbox files are deleted only
after the whole pipeline succeeded; a failure restores the catalogue, params and ``incoming/`` as
they were (:func:`rollback`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pooch
from dvc.utils.serialize import modify_yaml

from flows.dvc_runner import run_dvc
from flows.inbox.guard import NEAR_DUPLICATE_NCC, load_held_out, nearest_held_out
from flows.inbox.validation import IMAGE_ROLES, InboxError, InboxPair
from pipeline.catalogue import CatalogueFile, read_files_tsv, write_files_tsv
from pipeline.core.atomic import write_json
from pipeline.core.imageio import read_grey_uint8
from pipeline.core.params import PatchesParams, load_params
from pipeline.core.paths import ProjectPaths
from pipeline.data.patch_cutting import busy_cells

DATASET = "inbox"
STORE = Path("incoming")
CONF_FILE = Path("conf") / "config.yaml"  # the source params.yaml is composed from
ENTRY_YAML = """\
# Pairs ingested from the inbox by the retrain flow (flows/inbox/ingestion.py); files are kept,
# byte for byte, in incoming/ (tracked by DVC: incoming.dvc). Do not edit by hand.
name: inbox
description: user-supplied infrared/visible pairs ingested from the inbox
source: local files (inbox/<pair>/{ir,vis}.<ext> -> incoming/<pair>/, DVC-tracked)
licence: as supplied by the user
split: train
local: true
files: inbox.tsv
"""


@dataclass
class Snapshot:
    """What ingestion changed, to undo it if the run fails. With ``file`` set, every change is
    written there (atomically) before it is made, so a process that finds the run killed can
    :meth:`load` it and still undo it."""

    texts: dict[Path, str | None] = field(default_factory=dict)
    new_dirs: list[Path] = field(default_factory=list)
    file: Path | None = None

    def remember(self, path: Path) -> None:
        """Keep ``path``'s text (None: absent) before ingestion first edits it."""
        if path not in self.texts:
            self.texts[path] = path.read_text() if path.is_file() else None
            self._save()

    def new_dir(self, path: Path) -> None:
        """Note a folder ingestion is about to create (rollback deletes it)."""
        self.new_dirs.append(path)
        self._save()

    def _save(self) -> None:
        if self.file is not None:
            texts = [[str(path), text] for path, text in self.texts.items()]
            write_json(self.file, {"texts": texts, "new_dirs": [str(d) for d in self.new_dirs]})

    @classmethod
    def load(cls, file: Path) -> Snapshot:
        """The snapshot a killed run kept in ``file``."""
        kept = json.loads(file.read_text())
        texts = {Path(path): text for path, text in kept["texts"]}
        return cls(texts, [Path(d) for d in kept["new_dirs"]], file)


def catalogue_paths(root: Path) -> tuple[Path, Path]:
    """(``inbox.yaml``, ``inbox.tsv``) in the project's catalogue."""
    folder = ProjectPaths(root).catalogue_datasets
    return folder / f"{DATASET}.yaml", folder / f"{DATASET}.tsv"


def read_catalogue(root: Path) -> tuple[CatalogueFile, ...]:
    """Files already in ``inbox.tsv`` (none if it does not exist)."""
    _, tsv = catalogue_paths(root)
    return read_files_tsv(tsv) if tsv.is_file() else ()


def catalogue_hashes(root: Path) -> dict[str, str]:
    """``{sha256: "dataset/pair role"}`` of every catalogued ir/vis file (ingested ones too)."""
    hashes: dict[str, str] = {}
    for tsv in sorted(ProjectPaths(root).catalogue_datasets.glob("*.tsv")):
        for entry in read_files_tsv(tsv):
            if entry.role in IMAGE_ROLES:
                hashes.setdefault(entry.sha256, f"{tsv.stem}/{entry.pair} {entry.role}")
    return hashes


def plan(
    pairs: list[InboxPair], root: Path
) -> tuple[list[InboxPair], list[InboxPair], dict[str, str]]:
    """Split accepted pairs into (new, already ingested with identical files, rejected).

    Rejected: a name ingested before with other files; an ir/vis file byte-identical to a
    catalogued or ingested one; a pair that would give no training patch (no textured window
    under the ``patches`` params); a near-duplicate of a test image (naming the test pair), or
    any new pair while the test split cannot be read (they are checked again on the next run).
    """
    patches = load_params(ProjectPaths(root).params).patches
    known: dict[str, dict[str, str]] = {}
    for entry in read_catalogue(root):
        known.setdefault(entry.pair, {})[entry.role] = entry.sha256
    hashes = catalogue_hashes(root)
    candidates, duplicate, rejected = [], [], {}
    for pair in pairs:
        if pair.name in known:
            if known[pair.name] == pair.sha256:
                duplicate.append(pair)
            else:
                rejected[pair.name] = (
                    "a different pair with this name was ingested before; rename it"
                )
            continue
        same = [(r, hashes[pair.sha256[r]]) for r in IMAGE_ROLES if pair.sha256[r] in hashes]
        if same:
            role, where = same[0]
            rejected[pair.name] = f"{pair.files[role].name} is byte-identical to catalogued {where}"
            continue
        if not trainable(pair, patches):
            side = patches.patch_size
            rejected[pair.name] = (
                f"no {side}x{side} window of it has texture (std >= {patches.min_std} grey levels "
                "in either image): it would give no training patch (patches.patch_size, "
                "patches.min_std)"
            )
            continue
        candidates.append(pair)
    if not candidates:
        return [], duplicate, rejected
    try:
        held_out = load_held_out(root)
    except InboxError as exc:
        for pair in candidates:
            rejected[pair.name] = f"cannot check it against the test split: {exc}"
        return [], duplicate, rejected
    new = []
    for pair in candidates:
        found = nearest_held_out(pair, held_out)
        if found is not None and found[0] >= NEAR_DUPLICATE_NCC:
            score, role, test = found
            rejected[pair.name] = (
                f"{pair.files[role].name} is a near-duplicate of test pair {test.pair_id} "
                f"({test.path.relative_to(root)}, match {score:.3f} >= {NEAR_DUPLICATE_NCC}): "
                "test scenes are never trained on"
            )
        else:
            new.append(pair)
    return new, duplicate, rejected


def trainable(pair: InboxPair, patches: PatchesParams) -> bool:
    """Whether the patches stage would cut at least one patch from the pair."""
    vis = read_grey_uint8(pair.files["vis"])
    ir = read_grey_uint8(pair.files["ir"])
    return len(busy_cells(vis, ir, patches)[0]) > 0


def _copy_verified(src: Path, dst: Path, sha256: str) -> None:
    """Copy ``src`` (never through a symbolic link) to a new ``dst``, hashing as it goes;
    raises :class:`InboxError` if the bytes are not the ones verified at scan time."""
    digest = hashlib.sha256()
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as source, open(dst, "xb") as target:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            target.write(chunk)
    if digest.hexdigest() != sha256:
        raise InboxError(f"{src}: changed after it was verified; not ingested (run again)")


def ingest(pairs: list[InboxPair], root: Path, journal: Path | None = None) -> Snapshot:
    """Copy pairs into ``incoming/``, extend the catalogue and params, ``dvc add incoming``;
    each change is noted first (in ``journal`` too, when given)."""
    snapshot = Snapshot(file=journal)
    entry, tsv = catalogue_paths(root)
    conf = root / CONF_FILE
    edited = (
        entry,
        tsv,
        ProjectPaths(root).params,
        conf,
        root / f"{STORE}.dvc",
        root / ".gitignore",
    )
    for path in edited:
        snapshot.remember(path)
    try:
        files = list(read_catalogue(root))
        if not (root / STORE).exists():
            snapshot.new_dir(root / STORE)
            (root / STORE).mkdir()
        for pair in pairs:
            target = root / STORE / pair.name
            if target.exists():  # never noted as new: rollback must not delete it
                raise InboxError(f"{target}: already exists; {pair.name} not ingested")
            snapshot.new_dir(target)
            target.mkdir()
            for role, src in pair.files.items():
                dst = target / f"{role}{src.suffix.lower()}"
                _copy_verified(src, dst, pair.sha256[role])
                url = (STORE / pair.name / dst.name).as_posix()
                files.append(
                    CatalogueFile(pair.name, role, url, pair.sha256[role], dst.stat().st_size)
                )
        if not entry.is_file():
            entry.write_text(ENTRY_YAML)
        write_files_tsv(tsv, files)
        for params_file in (conf, ProjectPaths(root).params):  # conf/: kept when recomposed
            if params_file.is_file():
                with modify_yaml(params_file) as params:
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


def clear_inbox(pairs: list[InboxPair]) -> list[str]:
    """Delete ingested pairs from the inbox (called only after a successful run).

    Only the verified files go, and only while they still hold the ingested bytes; a folder is
    removed once empty. Never raises: returns one line per thing left in place (and why).
    """
    problems = []
    for pair in pairs:
        folder = pair.folder
        if folder.is_symlink() or not folder.is_dir():
            problems.append(f"{folder}: no longer a plain folder; left as it is")
            continue
        for role, path in pair.files.items():
            try:
                if path.is_symlink() or not path.is_file():
                    problems.append(f"{path}: no longer a regular file; left as it is")
                elif pooch.file_hash(str(path), alg="sha256") != pair.sha256[role]:
                    problems.append(f"{path}: changed since it was ingested; left as it is")
                else:
                    path.unlink()
            except OSError as exc:
                problems.append(f"{path}: cannot delete: {exc}")
        try:
            folder.rmdir()
        except OSError:
            left = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            problems.append(f"{folder}: left in place, it still holds {left}")
    return problems
