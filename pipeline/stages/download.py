"""Stage ``download``: fetch every catalogued file, verify it, and write one normalised layout.

Files are fetched by :mod:`pipeline.catalogue.fetch` (pooch: known hashes, retries with
back-off, atomic renames, a cache keyed ``HOST/PATH``, mirrors), several at once under one
progress bar.

Outputs: ``data/raw/<dataset>/{ir,vis,mask}/<pair>.png`` (8-bit; grey, colour visible images
keep colour; an infrared image stored as colour becomes grey: one channel where the channels are
equal, else BT.601 luma), ``data/raw/index.csv``, the published fusions of downloaded pairs
(``data/raw/published/<set>/<dataset>/<pair>.png``, listed in ``data/raw/published.csv``) and
``data/weights`` (SAM checkpoint, the authors' CoCoNet converted, README.txt); the VGG-19 file
goes to torchvision's cache. Both folders are built aside and renamed at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pooch
import torch.hub
from PIL import Image
from tqdm import tqdm

from pipeline.catalogue import CatalogueFile, Dataset, Weight, load_dataset, load_weights, url_key
from pipeline.catalogue.fetch import (  # noqa: F401  (re-exported for the stage's users)
    MIRROR_ENV,
    DownloadError,
    Request,
    cache_dir,
    fetch_all,
    file_requests,
    resolve_mirror,
    source_url,
)
from pipeline.catalogue.index import INDEX_COLUMNS, PUBLISHED_INDEX_COLUMNS
from pipeline.catalogue.published import Published, load_published
from pipeline.core.imageio import read_image, to_grey, to_uint8
from pipeline.core.params import DownloadParams, Params
from pipeline.core.paths import ProjectPaths
from pipeline.core.stage import stage_main
from pipeline.reference_models import official_checkpoint


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
    if params.official == "none":
        lines.append("CoCoNet official model: not fetched (download.official is none).")
    else:
        weight = catalogue[("coconet", "official")]
        target = weights_tmp / Path(weight.target).name
        official_checkpoint(target, mirror, params.retries)
        lines.append(_weight_line(weight, f"{weight.target} (converted)"))
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


def published_rows(
    published: list[Published], datasets: list[Dataset], mirror: str | None, workers: int,
    retries: int, out: Path,
) -> pd.DataFrame:  # fmt: skip
    """Fetch the published fusions of downloaded pairs, write them as grey PNG under
    ``out/published/<set>/<dataset>/<pair>.png`` and return their rows."""
    pair_ids = {f"{d.name}/{pair}" for d in datasets for pair in d.pairs()}
    wanted = [(p, f) for p in published for f in p.files if f.pair_id in pair_ids]
    cached = fetch_all(
        file_requests(f for _, f in wanted),
        cache_dir(),
        mirror,
        workers=workers,
        retries=retries,
        desc="published",
    )
    rows = []
    for pub, f in wanted:
        rel = Path("published") / pub.name / f.dataset / f"{f.pair}.png"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        image = _normalise(read_image(cached[f.key]), keep_colour=False)
        Image.fromarray(image).save(out / rel, format="PNG", compress_level=1)
        rows.append(
            {
                "published": pub.name,
                "label": pub.label,
                "pair_id": f.pair_id,
                "fused": (ProjectPaths(Path()).raw / rel).as_posix(),
                "url": f.url,
                "sha256": f.sha256,
                "method": f.method,
            }
        )
    return pd.DataFrame(rows, columns=PUBLISHED_INDEX_COLUMNS)


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
        cached = fetch_all(
            file_requests(remote.values()),
            cache_dir(),
            mirror,
            workers=p.workers,
            retries=p.retries,
            desc="datasets",
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
        published = [load_published(name) for name in p.published]
        published_rows(published, datasets, mirror, p.workers, p.retries, raw_tmp).to_csv(
            raw_tmp / "published.csv", index=False
        )
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
