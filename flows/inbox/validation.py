"""Inbox pairs checked one by one: the folder layout, safe names, regular files inside the
inbox, readable images of one size, and no byte-identical image twice in the inbox.

Layout of the inbox (default ``<project>/inbox``, ``$COCONET_INBOX`` or ``--inbox`` to change)::

    inbox/<pair>/ir.<ext>     infrared image           (png, bmp, jpg, tif, ...)
    inbox/<pair>/vis.<ext>    visible image, same size (grey or colour)
    inbox/<pair>/mask.<ext>   optional salient-target mask (0/255), same size

A pair is accepted when its folder name is a safe name (letters, digits, ``_ . -``), it has
exactly one ``ir`` and one ``vis`` image (and at most one ``mask``), every entry is a regular
file inside the inbox (no symbolic links, nothing resolving elsewhere), every file is readable
and all sizes match.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pooch

from pipeline.catalogue import ROLES
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import IMAGE_SUFFIXES, ImageError, read_image
from pipeline.core.paths import ProjectPaths

INBOX_ENV = "COCONET_INBOX"
IMAGE_ROLES = ("ir", "vis")  # what the duplicate checks compare (a blank mask may repeat)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class InboxError(CoconetError, ValueError):
    """An inbox file changed while it was ingested, or the test split cannot be read."""


@dataclass(frozen=True)
class InboxPair:
    """One verified pair waiting in the inbox."""

    name: str
    folder: Path
    files: dict[str, Path]
    sha256: dict[str, str]


def default_inbox(root: Path) -> Path:
    """``$COCONET_INBOX`` or ``<root>/inbox``."""
    return Path(os.environ.get(INBOX_ENV) or ProjectPaths(root).inbox)


def check_inbox_location(inbox: Path, root: Path, tracked: list[Path]) -> None:
    """Refuse an inbox that is the project, lies inside something DVC tracks (``incoming/``,
    ``data/``, a stage output) or holds such a thing: pairs are deleted from the inbox once
    ingested, and DVC-tracked files must never be."""
    inbox = inbox.resolve()
    if inbox == root.resolve():
        raise InboxError(f"inbox {inbox} is the project folder; use a folder of its own")
    for path in tracked:
        path = path.resolve()
        if inbox == path or inbox.is_relative_to(path) or path.is_relative_to(inbox):
            raise InboxError(
                f"inbox {inbox} overlaps {path}, which DVC tracks; pairs leave the inbox once "
                "ingested, so use a folder of its own (default <project>/inbox)"
            )


def _check_entry(path: Path, inbox: Path, what: str) -> None:
    """Refuse symbolic links, non-regular entries and anything resolving outside ``inbox``."""
    if path.is_symlink():
        raise ValueError(f"{what} is a symbolic link: copy the files into the inbox instead")
    if not path.resolve().is_relative_to(inbox):
        raise ValueError(f"{what} resolves outside the inbox ({path.resolve()})")


def verify_pair(folder: Path) -> InboxPair:
    """Check one inbox folder; raises ValueError naming the problem."""
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
            rejected[entry.name] = "a hidden entry (its name starts with '.'): rename it"
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
