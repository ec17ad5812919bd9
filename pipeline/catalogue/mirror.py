"""Building a mirror: the catalogued files, verified, laid out as ``MIRROR/HOST/PATH``.

A mirror is a folder (or a web server serving one) holding a copy of public files under the
path of the URL each is published at: ``https://HOST/PATH`` is ``MIRROR/HOST/PATH``. It is
what ``COCONET_MIRROR`` (or the ``download.mirror`` param) points the download stage at on
machines without internet. :func:`build_mirror` fetches every file the catalogue names from
its public URL (or from another mirror), verifies each against the catalogue's checksum, and
writes ``MANIFEST.tsv`` (url, sha256, bytes) last, so a mirror with a manifest is complete.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from pathlib import Path

from pipeline.catalogue.fetch import Request, fetch_all, file_requests
from pipeline.catalogue.loader import (
    CatalogueError,
    CatalogueFile,
    available_datasets,
    load_dataset,
    load_weights,
    url_key,
)
from pipeline.catalogue.published import available_published, load_published
from pipeline.core.atomic import atomic_path
from pipeline.core.ordering import natural_key

MANIFEST = "MANIFEST.tsv"
WEIGHT_FAMILIES = ("vgg19", "sam", "coconet")


def dataset_requests(names: Iterable[str]) -> list[Request]:
    """The files of the named datasets (local, ingested datasets have no public URL)."""
    files: list[CatalogueFile] = []
    for name in names:
        dataset = load_dataset(name)
        if dataset.local:
            raise CatalogueError(f"dataset {name!r} is local (ingested pairs): nothing to mirror")
        files.extend(dataset.files)
    return file_requests(files)


def published_requests(names: Iterable[str]) -> list[Request]:
    """The files of the named published sets (e.g. the authors' fused results)."""
    return file_requests(f for name in names for f in load_published(name).files)


def weight_requests(selected: Iterable[tuple[str, str]]) -> list[Request]:
    """The weight files ``(family, variant)``, e.g. ``("sam", "vit_b")``."""
    catalogue = load_weights()
    requests = []
    for key in selected:
        if key not in catalogue:
            known = ", ".join(f"{f}:{v}" for f, v in sorted(catalogue))
            raise CatalogueError(f"no weights {key[0]}:{key[1]} in the catalogue (known: {known})")
        weight = catalogue[key]
        requests.append(Request(url_key(weight.url), weight.url, weight.known_hash))
    return requests


def mirrorable_sets() -> list[str]:
    """Every catalogued dataset that has public URLs, then every published set."""
    datasets = [name for name in available_datasets() if not load_dataset(name).local]
    return [*datasets, *available_published()]


def set_requests(names: Iterable[str]) -> list[Request]:
    """The files of the named catalogued datasets and published sets."""
    names, published = list(names), set(available_published())
    return dataset_requests([n for n in names if n not in published]) + published_requests(
        [n for n in names if n in published]
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_mirror(
    target: Path,
    requests: list[Request],
    source: str | None = None,
    *,
    workers: int = 8,
    retries: int = 3,
) -> Path:
    """Fetch ``requests`` into ``target/HOST/PATH`` from their URLs (or the mirror ``source``),
    verified; then write ``target/MANIFEST.tsv`` (merged with an existing one) and return it.
    Files already in ``target`` with the right checksum are kept, not fetched again."""
    target = Path(target).resolve()
    if target.exists() and not target.is_dir():
        raise CatalogueError(f"{target}: not a folder")
    target.mkdir(parents=True, exist_ok=True)
    fetched = fetch_all(requests, target, source, workers=workers, retries=retries, desc="mirror")
    rows = _read_manifest(target / MANIFEST)
    for request in requests:
        path = fetched[request.key]
        rows[request.url] = (request.url, _sha256(path), str(path.stat().st_size))
    with atomic_path(target / MANIFEST) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["url", "sha256", "bytes"])
        writer.writerows(rows[url] for url in sorted(rows, key=natural_key))
    return target / MANIFEST


def _read_manifest(path: Path) -> dict[str, tuple[str, str, str]]:
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        return {
            row["url"]: (row["url"], row["sha256"], row["bytes"])
            for row in csv.DictReader(handle, delimiter="\t")
        }
