"""Fetching catalogued files: pooch with known hashes, retries, atomic renames, and mirrors.

Files go into a download cache, ``$COCONET_CACHE`` or ``pooch.os_cache("coconet")``
(``~/.cache/coconet`` on Linux), keyed ``HOST/PATH``, so a verified file is never fetched twice.
A mirror (``COCONET_MIRROR``, else a ``mirror`` param: a base URL or a folder) replaces
``https://`` so that ``https://HOST/PATH`` is read from ``MIRROR/HOST/PATH``; folders and
``file://`` mirrors are copied by :class:`LocalFileDownloader` under the same verification.
Git blob ids (``gitblob:<sha1>``, for files published only in a git repository) are checked
after the download, since pooch knows no such hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import pooch
import requests as http
from tqdm import tqdm

from pipeline.catalogue.loader import url_key
from pipeline.core.errors import CoconetError

MIRROR_ENV = "COCONET_MIRROR"
CACHE_ENV = "COCONET_CACHE"

log = logging.getLogger(__name__)


class DownloadError(CoconetError, RuntimeError):
    """A file could not be fetched or verified, or a pair is inconsistent."""


@dataclass(frozen=True)
class Request:
    """One file to fetch: where it is kept (relative to a folder), its URL and hash."""

    key: str
    url: str
    known_hash: str
    hint: str = ""


class CataloguedFile(Protocol):
    """A file the catalogue pins by public URL and sha256 (a dataset's or a published set's)."""

    @property
    def url(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def file_requests(files: Iterable[CataloguedFile]) -> list[Request]:
    """One sha256-checked request per distinct URL of ``files``, in first-seen order."""
    requests = {f.url: Request(url_key(f.url), f.url, f"sha256:{f.sha256}") for f in files}
    return list(requests.values())


def cache_dir() -> Path:
    """The download cache: ``$COCONET_CACHE`` or the OS cache folder for "coconet"."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path(pooch.os_cache("coconet"))


def resolve_mirror(param: str = "") -> str | None:
    """The mirror to read from: ``$COCONET_MIRROR`` wins over ``download.mirror``; None if unset."""
    return os.environ.get(MIRROR_ENV) or param or None


def mirror_base(mirror: str) -> str:
    """A mirror as a base URL ending in ``/``; a plain folder becomes a ``file://`` URL."""
    if "://" not in mirror:
        folder = Path(mirror).expanduser().resolve()
        if not folder.is_dir():
            raise DownloadError(f"mirror {mirror}: no such directory ({folder})")
        mirror = folder.as_uri()
    return mirror.rstrip("/") + "/"


def source_url(url: str, mirror: str | None) -> str:
    """Where ``url`` is read from: itself, or ``MIRROR/HOST/PATH`` when a mirror is set."""
    return mirror_base(mirror) + url_key(url) if mirror else url


class LocalFileDownloader:
    """pooch downloader for ``file://`` URLs: copies the file (pooch verifies and renames it)."""

    def __call__(self, url: str, output_file, pooch_obj, check_only: bool = False):
        path = Path(unquote(urlparse(url).path))
        if check_only:
            return path.is_file()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file in the mirror")
        if isinstance(output_file, str | Path):
            shutil.copyfile(path, output_file)
        else:
            with path.open("rb") as src:
                shutil.copyfileobj(src, output_file)


def _downloader(url: str, progressbar: bool):
    if url.startswith("file://"):
        return LocalFileDownloader()
    return pooch.HTTPDownloader(progressbar=progressbar, timeout=60)


def fetch_all(
    requests: Iterable[Request],
    folder: Path,
    mirror: str | None,
    *,
    workers: int = 8,
    retries: int = 3,
    desc: str = "download",
    file_progress: bool = False,
) -> dict[str, Path]:
    """Fetch and verify files into ``folder/<key>`` several at a time; verified files are kept.

    Raises :class:`DownloadError` naming the URL (and both hashes on a mismatch) once a file
    has failed ``1 + retries`` attempts; pooch leaves nothing at the target in that case.
    """
    requests = list(requests)
    folder = Path(folder)
    urls = {r.key: source_url(r.url, mirror) for r in requests}
    store = pooch.create(
        path=folder,
        base_url="https://",
        registry={r.key: pooch_hash(r.known_hash) for r in requests},
        urls=urls,
        retry_if_failed=retries,
    )
    for r in requests:  # pooch creates missing parents unsafely when threads race
        (folder / r.key).parent.mkdir(parents=True, exist_ok=True)

    def fetch(r: Request) -> Path:
        src = urls[r.key]
        where = r.url if src == r.url else f"{r.url} (read from {src})"
        try:
            path = Path(store.fetch(r.key, downloader=_downloader(src, file_progress)))
        except ValueError as exc:  # pooch: hash mismatch, naming the expected and actual hash
            raise DownloadError(
                f"{where}: checksum mismatch after {retries + 1} attempts: {exc}"
            ) from exc
        except http.RequestException as exc:  # retried by pooch: network, dropped connection
            raise DownloadError(
                f"cannot fetch {where} after {retries + 1} attempts: {exc}. {r.hint}".strip()
            ) from exc
        except OSError as exc:  # not retried: missing from a folder mirror, disk errors
            raise DownloadError(f"cannot fetch {where}: {exc}. {r.hint}".strip()) from exc
        check_git_blob(path, r.known_hash, where)
        return path

    paths: dict[str, Path] = {}
    pooch.get_logger().setLevel(logging.WARNING)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(requests), desc=desc, unit="file", disable=not requests) as bar,
    ):
        futures = {pool.submit(fetch, r): r for r in requests}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in pending:
                        other.cancel()
                    raise future.exception()
                paths[futures[future].key] = future.result()
                bar.update(1)
    return paths


GIT_BLOB = "gitblob:"


def pooch_hash(known_hash: str) -> str | None:
    """The hash pooch verifies: None for a git blob id (checked by :func:`check_git_blob`)."""
    return None if known_hash.startswith(GIT_BLOB) else known_hash


def git_blob_id(path: Path) -> str:
    """Git's object id of a file's content: sha1 of ``b"blob <size>\\0" + content``."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_git_blob(path: Path, known_hash: str, where: str) -> None:
    """Verify a ``gitblob:`` hash; a mismatching file is deleted so it is fetched again."""
    if not known_hash.startswith(GIT_BLOB):
        return
    expected, actual = known_hash[len(GIT_BLOB) :], git_blob_id(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DownloadError(f"{where}: git blob id {actual} does not match {expected}")
