"""Stage ``download``: fetch every catalogued file, verify it, and write one normalised layout.

Files are fetched with pooch (known hashes, retries with back-off, a temporary file renamed
into place only after its hash matched) into a download cache, ``$COCONET_CACHE`` or
``pooch.os_cache("coconet")`` (``~/.cache/coconet`` on Linux), keyed ``HOST/PATH``, so a
re-run never refetches a verified file. Several files download at once (a thread pool) under
one overall progress bar. A mirror (``COCONET_MIRROR``, else ``download.mirror``: a base URL
or a folder) replaces ``https://`` so that ``https://HOST/PATH`` is read from
``MIRROR/HOST/PATH``; folders and ``file://`` mirrors are copied by :class:`LocalFileDownloader`
under the same pooch verification.

Outputs: ``data/raw/<dataset>/{ir,vis,mask}/<pair>.png`` (8-bit; grey, colour visible images
keep colour), ``data/raw/index.csv`` and ``data/weights`` (SAM checkpoint, README.txt); the
VGG-19 file goes to torchvision's cache. Both folders are built aside and renamed at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pooch
from PIL import Image
from tqdm import tqdm

from pipeline.catalogue import CatalogueFile, Dataset, Weight, load_dataset, load_weights, url_key
from pipeline.core.errors import CoconetError
from pipeline.core.imageio import read_image, to_grey, to_uint8
from pipeline.core.params import DownloadParams, Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main

INDEX_COLUMNS = [
    "pair_id",
    "dataset",
    "pair",
    "split",
    "width",
    "height",
    "ir",
    "vis",
    "mask",
    "ir_url",
    "vis_url",
    "mask_url",
    "ir_sha256",
    "vis_sha256",
    "mask_sha256",
]
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
    import requests as http  # pooch's HTTP client

    requests = list(requests)
    folder = Path(folder)
    urls = {r.key: source_url(r.url, mirror) for r in requests}
    store = pooch.create(
        path=folder,
        base_url="https://",
        registry={r.key: r.known_hash for r in requests},
        urls=urls,
        retry_if_failed=retries,
    )
    for r in requests:  # pooch creates missing parents unsafely when threads race
        (folder / r.key).parent.mkdir(parents=True, exist_ok=True)

    def fetch(r: Request) -> Path:
        src = urls[r.key]
        where = r.url if src == r.url else f"{r.url} (read from {src})"
        try:
            return Path(store.fetch(r.key, downloader=_downloader(src, file_progress)))
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


def _hash_hint(family: str) -> str:
    return (
        f"Offline? Point {MIRROR_ENV} (or download.mirror) at a mirror holding it, "
        f"or set download.{family}=none"
        + (
            " (and model.vgg_weights=random or a path)."
            if family == "vgg19"
            else " (and masks.method=ir_saliency)."
        )
    )


def fetch_weights(params: DownloadParams, mirror: str | None, weights_tmp: Path) -> list[str]:
    """Fetch the weights the params ask for; returns README lines describing what is where."""
    catalogue = load_weights()
    lines = []
    if params.vgg19 == "none":
        lines.append("VGG-19: not fetched (download.vgg19 is none).")
    else:
        weight = catalogue[("vgg19", params.vgg19)]
        import torch.hub

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        request = Request(weight.file_name, weight.url, weight.known_hash, _hash_hint("vgg19"))
        fetch_all(
            [request],
            hub,
            mirror,
            workers=1,
            retries=params.retries,
            desc="vgg19",
            file_progress=True,
        )
        lines.append(_weight_line(weight, f"torch.hub.get_dir()/checkpoints/{weight.file_name}"))
    if params.sam == "none":
        lines.append(
            "SAM: no checkpoint (download.sam is none); the masks stage then needs "
            "masks.method=ir_saliency."
        )
    else:
        weight = catalogue[("sam", params.sam)]
        request = Request(url_key(weight.url), weight.url, weight.known_hash, _hash_hint("sam"))
        cached = fetch_all(
            [request],
            cache_dir(),
            mirror,
            workers=1,
            retries=params.retries,
            desc=f"sam {params.sam}",
            file_progress=True,
        )
        target = weights_tmp / Path(weight.target).name
        _link_or_copy(cached[request.key], target)
        lines.append(_weight_line(weight, weight.target))
    return lines


def _weight_line(weight: Weight, where: str) -> str:
    return f"{weight.family} {weight.variant}: {where} from {weight.url} ({weight.known_hash})"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def verify_local(root: Path, entry: CatalogueFile) -> Path:
    """A file of a ``local`` dataset (path relative to ``root``), checked against its sha256."""
    path = root / entry.url
    if not path.is_file():
        raise DownloadError(f"{path}: catalogued local file is missing")
    actual = pooch.file_hash(str(path), alg="sha256")
    if actual != entry.sha256:
        raise DownloadError(f"{path}: sha256 is {actual}, the catalogue says {entry.sha256}")
    return path


def _normalise(image: np.ndarray, keep_colour: bool) -> np.ndarray:
    """8-bit grey, or 8-bit RGB when colour is kept and the channels actually differ."""
    if image.ndim == 3:
        if np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(
            image[..., 1], image[..., 2]
        ):
            image = image[..., 0]
        elif not keep_colour:
            image = to_grey(image)
    return to_uint8(image)


def convert_pair(
    dataset: Dataset,
    pair: str,
    files: dict[str, CatalogueFile],
    sources: dict[str, Path],
    out: Path,
) -> dict:
    """Write one pair as PNG under ``out/<dataset>/`` and return its index row."""
    pair_id = f"{dataset.name}/{pair}"
    images = {
        role: _normalise(read_image(sources[entry.url]), keep_colour=role == "vis")
        for role, entry in files.items()
    }
    height, width = images["ir"].shape[:2]
    for role, image in images.items():
        if image.shape[:2] != (height, width):
            h, w = image.shape[:2]
            raise DownloadError(
                f"{pair_id}: infrared is {width}x{height} ({files['ir'].url}) but {role} is "
                f"{w}x{h} ({files[role].url})"
            )
    row = {
        "pair_id": pair_id,
        "dataset": dataset.name,
        "pair": pair,
        "split": dataset.split_of(pair),
        "width": width,
        "height": height,
    }
    for role in ("ir", "vis", "mask"):
        rel = ProjectPaths(Path()).raw / dataset.name / role / f"{pair}.png"
        if role in images:
            target = out / dataset.name / role / f"{pair}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            # fast zlib level: imageio.write_image's default level costs 6x the time here
            Image.fromarray(images[role]).save(target, format="PNG", compress_level=1)
        entry = files.get(role)
        row[role] = rel.as_posix() if entry else ""
        row[f"{role}_url"] = entry.url if entry else ""
        row[f"{role}_sha256"] = entry.sha256 if entry else ""
    return row


def _replace_dir(tmp: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def run(params: Params, paths: ProjectPaths) -> pd.DataFrame:
    """Run the stage; returns the index written to ``data/raw/index.csv``."""
    p = params.download
    mirror = resolve_mirror(p.mirror)
    datasets = [load_dataset(name) for name in p.datasets]
    paths.data.mkdir(parents=True, exist_ok=True)
    raw_tmp = Path(tempfile.mkdtemp(prefix=".raw-", dir=paths.data))
    weights_tmp = Path(tempfile.mkdtemp(prefix=".weights-", dir=paths.data))
    try:
        readme = fetch_weights(p, mirror, weights_tmp)
        remote = {f.url: f for d in datasets if not d.local for f in d.files}
        requests = [Request(f.key, f.url, f"sha256:{f.sha256}") for f in remote.values()]
        cached = fetch_all(
            requests, cache_dir(), mirror, workers=p.workers, retries=p.retries, desc="datasets"
        )
        sources = {url: cached[f.key] for url, f in remote.items()}
        sources |= {
            f.url: verify_local(paths.root, f) for d in datasets if d.local for f in d.files
        }
        jobs = [(d, pair, files) for d in datasets for pair, files in d.pairs().items()]
        with ThreadPoolExecutor(max_workers=p.workers) as pool:
            rows = list(
                tqdm(
                    pool.map(lambda j: convert_pair(*j, sources, raw_tmp), jobs),
                    total=len(jobs),
                    desc="normalise",
                    unit="pair",
                )
            )
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        index.to_csv(raw_tmp / "index.csv", index=False)
        (weights_tmp / "README.txt").write_text(
            "Weights fetched by the download stage (params download.vgg19 / download.sam):\n"
            + "\n".join(readme)
            + "\n"
        )
        _replace_dir(raw_tmp, paths.raw)
        _replace_dir(weights_tmp, paths.weights)
    finally:
        shutil.rmtree(raw_tmp, ignore_errors=True)
        shutil.rmtree(weights_tmp, ignore_errors=True)
    counts = index.groupby(["dataset", "split"]).size().to_dict()
    print(
        f"data/raw: {len(index)} pairs "
        + ", ".join(f"{d}/{s}: {n}" for (d, s), n in counts.items())
    )
    return index


if __name__ == "__main__":
    stage_main(run, __doc__.splitlines()[0])
