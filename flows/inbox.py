"""Inbox ingestion: verified new pairs become the ``inbox`` dataset of the catalogue.

Layout of the inbox (default ``<project>/inbox``, ``$COCONET_INBOX`` or ``--inbox`` to change)::

    inbox/<pair>/ir.<ext>     infrared image           (png, bmp, jpg, tif, ...)
    inbox/<pair>/vis.<ext>    visible image, same size (grey or colour)
    inbox/<pair>/mask.<ext>   optional salient-target mask (0/255), same size

A pair is accepted when its folder name is a safe name (letters, digits, ``_ . -``), it has
exactly one ``ir`` and one ``vis`` image (and at most one ``mask``), every entry is a regular
file inside the inbox (no symbolic links, nothing resolving elsewhere), every file is readable
and all sizes match. A new pair is then refused when an ``ir``/``vis`` file is byte-identical
(sha256) to a catalogued or already ingested file or to one of another inbox pair, and when an
image is a near-duplicate of a test image (:func:`match_score`, :data:`NEAR_DUPLICATE_NCC`):
no test scene is ever trained on. Rejected pairs stay where they are and are reported on every
run.

Ingestion copies the accepted files, byte for byte and re-hashed while copying, to
``incoming/<pair>/`` (tracked by DVC: ``dvc add incoming`` -> ``incoming.dvc``), appends their
repo-relative paths, sha256s and sizes to the catalogue's ``pipeline/catalogue/datasets/inbox.tsv``
(entry ``inbox.yaml``, ``local: true``, split train) and lists ``inbox`` in
``download.datasets``. The catalogue is a dependency of the download stage, so ``dvc repro``
sees the new pairs. The inbox files are deleted only after the whole pipeline succeeded; a
failure restores the catalogue, params and ``incoming/`` as they were (:func:`rollback`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pooch

from pipeline.core.errors import CoconetError
from pipeline.core.paths import ProjectPaths

DATASET = "inbox"
STORE = Path("incoming")
INBOX_ENV = "COCONET_INBOX"
ROLES = ("ir", "vis", "mask")
IMAGE_ROLES = ("ir", "vis")  # what the duplicate checks compare (a blank mask may repeat)
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

# Near-duplicates of test images: both images in grey, the test image scaled to GRID px on its
# longer side, both band-passed (difference of Gaussians, BAND sigmas in grid px: brightness,
# contrast, re-encoding and noise drop out, scene structure stays). The inbox image is scaled so
# that it spans each fraction in COVERAGE of the test image's width (a crop of up to 20%) and
# slid over it; the score is the highest normalised cross-correlation. Measured on the mirrored
# data (flows/README.md): edited copies of the 42 TNO test images (JPEG q30, crops of 2-10%,
# shifts, brightness +-30, gamma, half/1.5x size, noise, blur) score >= 0.91; other TNO scenes
# (incl. the same building seen from elsewhere) <= 0.67, RoadScene <= 0.62; other frames of a
# test scene from the same viewpoint score 0.84-0.89 and are refused too.
NEAR_DUPLICATE_NCC = 0.80
GRID = 128
BAND = (2.0, 8.0)
COVERAGE = tuple(round(1.0 - 0.02 * i, 2) for i in range(11))  # 1.00 ... 0.80
HEIGHT_RANGE = (0.75, 1.05)  # template height / test height that can still be a crop of it


class InboxError(CoconetError, ValueError):
    """An inbox file changed while it was ingested, or the test split cannot be read."""


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


@dataclass(frozen=True)
class HeldOutImage:
    """One image of the test split, prepared for :func:`match_score`."""

    pair_id: str
    role: str
    path: Path
    grid: np.ndarray  # band-passed grey image, GRID px on its longer side


def default_inbox(root: Path) -> Path:
    """``$COCONET_INBOX`` or ``<root>/inbox``."""
    return Path(os.environ.get(INBOX_ENV) or ProjectPaths(root).inbox)


def _check_entry(path: Path, inbox: Path, what: str) -> None:
    """Refuse symbolic links, non-regular entries and anything resolving outside ``inbox``."""
    if path.is_symlink():
        raise ValueError(f"{what} is a symbolic link: copy the files into the inbox instead")
    if not path.resolve().is_relative_to(inbox):
        raise ValueError(f"{what} resolves outside the inbox ({path.resolve()})")


def verify_pair(folder: Path) -> InboxPair:
    """Check one inbox folder; raises ValueError naming the problem."""
    from pipeline.core.imageio import IMAGE_SUFFIXES, ImageError, read_image

    if not NAME_RE.match(folder.name):
        raise ValueError("folder name must be letters, digits, '_', '.', '-' (max 100)")
    inbox = folder.parent.resolve()
    _check_entry(folder, inbox, "the folder")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        _check_entry(path, inbox, path.name)
        if not stat.S_ISREG(path.lstat().st_mode):
            raise ValueError(f"{path.name} is not a regular file")
        role = path.stem.lower()
        if role not in ROLES or path.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"unexpected file {path.name} (want ir.<ext>, vis.<ext>, mask.<ext>)")
        if role in files:
            raise ValueError(f"two {role} images: {files[role].name}, {path.name}")
        files[role] = path
    missing = [r for r in IMAGE_ROLES if r not in files]
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
    """Accepted pairs and ``{entry: reason}`` for everything rejected.

    A pair whose ``ir`` or ``vis`` file is byte-identical to one of an earlier pair (in name
    order) in the inbox is rejected, naming that pair.
    """
    pairs: list[InboxPair] = []
    rejected: dict[str, str] = {}
    if not inbox.is_dir():
        return pairs, rejected
    seen: dict[str, str] = {}  # sha256 -> "pair/role"
    for entry in sorted(inbox.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            rejected[entry.name] = "a symbolic link: copy the pair into the inbox instead"
            continue
        if not entry.is_dir():
            rejected[entry.name] = "not a folder: put each pair in inbox/<pair>/{ir,vis}.<ext>"
            continue
        try:
            pair = verify_pair(entry)
        except (ValueError, OSError) as exc:
            rejected[entry.name] = str(exc)
            continue
        clash = [(r, seen[pair.sha256[r]]) for r in IMAGE_ROLES if pair.sha256[r] in seen]
        if clash:
            role, other = clash[0]
            rejected[entry.name] = (
                f"{pair.files[role].name} is byte-identical to inbox/{other}: keep one copy"
            )
            continue
        for role in IMAGE_ROLES:
            seen[pair.sha256[role]] = f"{pair.name}/{pair.files[role].name}"
        pairs.append(pair)
    return pairs, rejected


def catalogue_paths(root: Path) -> tuple[Path, Path]:
    """(``inbox.yaml``, ``inbox.tsv``) in the project's catalogue."""
    folder = ProjectPaths(root).catalogue_datasets
    return folder / f"{DATASET}.yaml", folder / f"{DATASET}.tsv"


def read_catalogue(root: Path) -> list[dict[str, str]]:
    """Rows already in ``inbox.tsv`` (empty if none)."""
    _, tsv = catalogue_paths(root)
    if not tsv.is_file():
        return []
    with open(tsv, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def catalogue_hashes(root: Path) -> dict[str, str]:
    """``{sha256: "dataset/pair role"}`` of every catalogued ir/vis file (ingested ones too)."""
    hashes: dict[str, str] = {}
    for tsv in sorted(ProjectPaths(root).catalogue_datasets.glob("*.tsv")):
        with open(tsv, newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if row.get("role") in IMAGE_ROLES and row.get("sha256"):
                    hashes.setdefault(row["sha256"], f"{tsv.stem}/{row['pair']} {row['role']}")
    return hashes


def _grid(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (grey float) resized to ``width`` x ``height`` and band-passed."""
    h, w = image.shape
    shrink = width < w
    resized = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return cv2.GaussianBlur(resized, (0, 0), BAND[0]) - cv2.GaussianBlur(resized, (0, 0), BAND[1])


def _grey(path: Path) -> np.ndarray:
    from pipeline.core.imageio import read_image, to_grey

    return np.ascontiguousarray(to_grey(read_image(path)), dtype=np.float32)


def reference_grid(image: np.ndarray) -> np.ndarray:
    """A test image (grey float) as :func:`match_score` compares against it."""
    h, w = image.shape
    scale = GRID / max(h, w)
    return _grid(image, max(1, round(w * scale)), max(1, round(h * scale)))


def match_score(image: np.ndarray, reference: np.ndarray, cache: dict | None = None) -> float:
    """How well ``image`` (grey float, any size) matches a :func:`reference_grid`: the highest
    normalised cross-correlation of the band-passed images over the scales in COVERAGE and
    every translation (1.0: the same picture; unrelated images stay well below 0.7).

    ``cache`` (a dict) keeps the scaled ``image`` between calls with references of one size.
    """
    cache = {} if cache is None else cache
    ref_h, ref_w = reference.shape
    h, w = image.shape
    best = -1.0
    for cover in COVERAGE:
        scale = cover * ref_w / w
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if not HEIGHT_RANGE[0] * ref_h <= size[1] <= HEIGHT_RANGE[1] * ref_h:
            continue
        if size not in cache:
            cache[size] = _grid(image, *size)
        template = cache[size]
        if template.shape[0] > ref_h:  # a little taller: compare its middle rows
            top = (template.shape[0] - ref_h) // 2
            template = template[top : top + ref_h]
        if float(template.std()) < 1e-6:  # no structure to compare
            continue
        scores = cv2.matchTemplate(reference, template, cv2.TM_CCOEFF_NORMED)
        best = max(best, float(np.nanmax(scores)))
    return min(best, 1.0)


def load_held_out(root: Path) -> list[HeldOutImage]:
    """The test split's images from ``data/raw/index.csv`` (split == test), ready to match.

    Raises :class:`InboxError` naming the file when the index or an image cannot be read.
    """
    from pipeline.core.imageio import ImageError

    paths = ProjectPaths(root)
    index = paths.index
    if not index.is_file():
        raise InboxError(
            f"{index} is missing (run `dvc checkout data/raw` or `dvc repro download`)"
        )
    with open(index, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("split") == "test"]
    held_out = []
    for row in rows:
        for role in IMAGE_ROLES:
            path = root / row[role]
            try:
                grid = reference_grid(_grey(path))
            except (ImageError, OSError) as exc:
                raise InboxError(f"{path}: test image listed in {index} unreadable: {exc}") from exc
            held_out.append(HeldOutImage(row["pair_id"], role, path, grid))
    return held_out


def nearest_held_out(
    pair: InboxPair, held_out: list[HeldOutImage]
) -> tuple[float, str, HeldOutImage] | None:
    """(score, inbox role, test image) of the closest test image to any ir/vis image of ``pair``."""
    best = None
    for role in IMAGE_ROLES:
        image, cache = _grey(pair.files[role]), {}
        for test in held_out:
            score = match_score(image, test.grid, cache)
            if best is None or score > best[0]:
                best = (score, role, test)
    return best


def plan(
    pairs: list[InboxPair], root: Path
) -> tuple[list[InboxPair], list[InboxPair], dict[str, str]]:
    """Split accepted pairs into (new, already ingested with identical files, rejected).

    Rejected: a name ingested before with other files; an ir/vis file byte-identical to a
    catalogued or ingested one; a near-duplicate of a test image (naming the test pair), or any
    new pair while the test split cannot be read (they are checked again on the next run).
    """
    known: dict[str, dict[str, str]] = {}
    for row in read_catalogue(root):
        known.setdefault(row["pair"], {})[row["role"]] = row["sha256"]
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


def _remember(snapshot: Snapshot, path: Path) -> None:
    if path not in snapshot.texts:
        snapshot.texts[path] = path.read_text() if path.is_file() else None


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


def ingest(pairs: list[InboxPair], root: Path) -> Snapshot:
    """Copy pairs into ``incoming/``, extend the catalogue and params, ``dvc add incoming``."""
    from dvc.utils.serialize import modify_yaml

    from flows.dvc_cli import run_dvc

    snapshot = Snapshot()
    entry, tsv = catalogue_paths(root)
    for path in (entry, tsv, ProjectPaths(root).params, root / f"{STORE}.dvc", root / ".gitignore"):
        _remember(snapshot, path)
    try:
        rows = read_catalogue(root)
        if not (root / STORE).exists():
            (root / STORE).mkdir()
            snapshot.new_dirs.append(root / STORE)
        for pair in pairs:
            target = root / STORE / pair.name
            target.mkdir()
            snapshot.new_dirs.append(target)
            for role, src in pair.files.items():
                dst = target / f"{role}{src.suffix.lower()}"
                _copy_verified(src, dst, pair.sha256[role])
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
