"""Reference models: the authors' trained CoCoNet, fetched, verified, converted once and cached.

``official`` is the catalogue's ``coconet/official`` weight (the official repository's
``logs/latest.pth`` at a pinned commit, verified by its git blob id). It is converted with
:func:`models.official.save_converted` into this project's checkpoint format; the VGG-19 layers
the file lacks (conv4_1 .. conv5_4, used only by the contrastive loss) are filled with random
weights and the converted file says so.
"""

from __future__ import annotations

from pathlib import Path

import pooch

from models.official import save_converted
from pipeline.catalogue import load_weights, url_key
from pipeline.catalogue.fetch import MIRROR_ENV, Request, cache_dir, fetch_all, resolve_mirror
from pipeline.core.atomic import atomic_path

OFFICIAL_WEIGHT = ("coconet", "official")  # the catalogue's entry for the authors' model
CONVERTED_VGG_FILL = "random"


def _official_request() -> Request:
    weight = load_weights()[OFFICIAL_WEIGHT]
    hint = (
        f"Offline? Set {MIRROR_ENV} (or download.mirror) to a mirror holding it, or convert a "
        "copy you have with: coconet import-official PATH -o OUT.pt"
    )
    return Request(url_key(weight.url), weight.url, weight.known_hash, hint)


def fetch_official(mirror: str | None = None, retries: int = 3) -> Path:
    """The official checkpoint file in the download cache (fetched and verified if needed)."""
    request = _official_request()
    folder = cache_dir()
    return fetch_all([request], folder, resolve_mirror(mirror or ""), workers=1, retries=retries)[
        request.key
    ]


def official_checkpoint(
    target: Path | None = None, mirror: str | None = None, retries: int = 3
) -> Path:
    """The official model converted to this project's format; converted once, then reused.

    ``target`` defaults to ``$COCONET_CACHE/converted/coconet_official-<blob id>.pt``.
    """
    blob = _official_request().known_hash.split(":", 1)[1][:12]
    target = target or cache_dir() / "converted" / f"coconet_official-{blob}.pt"
    if target.is_file() and _intact(target):
        return target
    raw = fetch_official(mirror, retries)
    save_converted(raw, target, vgg_weights=CONVERTED_VGG_FILL)
    _record_hash(target)
    return target


def _hash_file(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _record_hash(target: Path) -> None:
    """Write the converted file's sha256 beside it (atomically), for :func:`_intact`."""
    with atomic_path(_hash_file(target)) as tmp:
        tmp.write_text(pooch.file_hash(str(target), alg="sha256") + "\n")


def _intact(target: Path) -> bool:
    """Whether a cached conversion is the file this code wrote: its sha256 matches the one
    recorded at conversion (a file planted or changed in the cache is converted afresh)."""
    recorded = _hash_file(target)
    if not recorded.is_file():
        return False
    return recorded.read_text().strip() == pooch.file_hash(str(target), alg="sha256")
