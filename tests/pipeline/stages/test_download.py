"""The download stage against a real HTTP server on 127.0.0.1 and against folder mirrors."""

from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.catalogue import CatalogueError, Weight
from pipeline.catalogue import loader as catalogue
from pipeline.catalogue.index import INDEX_COLUMNS
from pipeline.catalogue.published import load_published
from pipeline.core.params import PROJECT_ROOT, Params
from pipeline.core.paths import ProjectPaths
from pipeline.stages import download
from pipeline.stages.download import DownloadError, Request, fetch_all

HOST = "example.org/tiny@0123abcd"
TRAIN_PAIRS = {"a": (24, 32), "b": (20, 28), "c": (24, 32)}
TEST_PAIRS = {"1": (16, 16), "2": (16, 20)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _dataset_entry(cat: Path, mirror: Path, name: str, split: str, files: list, exclude=None):
    rows = []
    for pair, role, rel in files:
        url = f"https://{HOST}/{rel}"
        local = mirror / HOST / rel
        rows.append(f"{pair}\t{role}\t{url}\t{sha256(local)}\t{local.stat().st_size}")
    (cat / "datasets" / f"{name}.tsv").write_text(
        "pair\trole\turl\tsha256\tbytes\n" + "\n".join(rows) + "\n"
    )
    entry = f"name: {name}\nsplit: {split}\nfiles: {name}.tsv\n"
    if exclude:
        entry += (
            "exclude:\n  table: overlap.tsv\n  column: test_name\n"
            "  pattern: '^IR(?P<pair>\\d+)\\.png$'\n  split: unused\n"
        )
    (cat / "datasets" / f"{name}.yaml").write_text(entry)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A two-dataset catalogue of tiny images, its mirror folder, and an empty cache."""
    rng = np.random.default_rng(0)
    mirror, cat = tmp_path / "mirror", tmp_path / "catalogue"
    (cat / "datasets").mkdir(parents=True)
    train = []
    for pair, (h, w) in TRAIN_PAIRS.items():
        _write_png(mirror / HOST / f"ir/{pair}.png", rng.integers(0, 256, (h, w), np.uint8))
        _write_png(mirror / HOST / f"vis/{pair}.png", rng.integers(0, 256, (h, w, 3), np.uint8))
        train += [(pair, "ir", f"ir/{pair}.png"), (pair, "vis", f"vis/{pair}.png")]
    _write_png(mirror / HOST / "mask/a.png", (rng.random((24, 32)) > 0.5).astype(np.uint8) * 255)
    train.append(("a", "mask", "mask/a.png"))
    test = []
    for pair, (h, w) in TEST_PAIRS.items():
        grey = rng.integers(0, 256, (h, w), np.uint8)
        _write_png(mirror / HOST / f"test/IR{pair}.png", grey)
        _write_png(mirror / HOST / f"test/VIS{pair}.png", np.stack([grey] * 3, axis=-1))
        test += [(pair, "ir", f"test/IR{pair}.png"), (pair, "vis", f"test/VIS{pair}.png")]
    (cat / "overlap.tsv").write_text("train_name\ttest_name\nx.png\tIR2.png\ny.png\t-\n")
    _dataset_entry(cat, mirror, "tinytrain", "train", train)
    _dataset_entry(cat, mirror, "tinytest", "test", test, exclude=True)
    monkeypatch.setattr(catalogue, "CATALOGUE_DIR", cat)
    monkeypatch.setattr(catalogue, "DATASETS_DIR", cat / "datasets")
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COCONET_MIRROR", raising=False)
    return mirror


class _Handler(SimpleHTTPRequestHandler):
    """Serves the mirror; can drop the connection half-way or corrupt chosen paths."""

    def do_GET(self):  # noqa: N802 (http.server API)
        state = self.server.state
        state["requests"].append(self.path)
        behaviour = state["faults"].get(self.path)
        if behaviour and state["budget"].get(self.path, 0) > 0:
            state["budget"][self.path] -= 1
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if behaviour == "drop":
                self.wfile.write(body[: len(body) // 2])
                self.close_connection = True
            else:  # corrupt: full length, one byte flipped
                self.wfile.write(body[:-1] + bytes([body[-1] ^ 0xFF]))
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tiny):
    """A real HTTP server on an ephemeral 127.0.0.1 port serving the tiny mirror."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(tiny)))
    httpd.state = {"requests": [], "faults": {}, "budget": {}}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _params(tmp_path: Path, mirror: str, **download) -> Params:
    settings = {"datasets": ["tinytrain", "tinytest"], "mirror": mirror, "workers": 3,
                "retries": 0, "vgg19": "none", "sam": "none", "official": "none"}  # fmt: skip
    settings |= download
    return Params.model_validate({"download": settings})


def _url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/"


def _no_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_stage_over_http_writes_layout_index_and_skips_verified_files(tmp_path, server):
    root = tmp_path / "repo"
    index = download.run(_params(tmp_path, _url(server)), ProjectPaths(root))
    assert list(index.columns) == INDEX_COLUMNS
    assert index.set_index("pair_id")["split"].to_dict() == {
        "tinytrain/a": "train", "tinytrain/b": "train", "tinytrain/c": "train",
        "tinytest/1": "test", "tinytest/2": "unused",
    }  # fmt: skip
    on_disk = pd.read_csv(root / "data/raw/index.csv", keep_default_na=False)
    assert on_disk["mask"].tolist().count("") == 4
    a = on_disk.set_index("pair_id").loc["tinytrain/a"]
    assert (a.width, a.height) == (32, 24)
    assert a.ir_url == f"https://{HOST}/ir/a.png"
    assert Image.open(root / a.ir).mode == "L"
    assert Image.open(root / a.vis).mode == "RGB"  # colour visible keeps colour
    assert Image.open(root / "data/raw/tinytest/vis/1.png").mode == "L"  # grey stored as RGB
    src = np.asarray(Image.open(tiny_path(server, "mask/a.png")))
    assert np.array_equal(np.asarray(Image.open(root / a["mask"])), src)
    assert "download.sam is none" in (root / "data/weights/README.txt").read_text()
    first = len(server.state["requests"])
    assert first == 11

    download.run(
        _params(tmp_path, _url(server)), ProjectPaths(root)
    )  # verified files are not refetched
    assert len(server.state["requests"]) == first

    cached = tmp_path / "cache" / HOST / "vis/b.png"
    cached.write_bytes(b"stale")  # a cached file that fails verification is fetched again
    download.run(_params(tmp_path, _url(server)), ProjectPaths(root))
    assert server.state["requests"][first:] == [f"/{HOST}/vis/b.png"]
    assert sha256(cached) == sha256(tiny_path(server, "vis/b.png"))


def tiny_path(server, rel: str) -> Path:
    return Path(server.RequestHandlerClass.keywords["directory"]) / HOST / rel


def test_corrupt_file_fails_naming_url_and_both_hashes(tmp_path, server):
    path = f"/{HOST}/vis/b.png"
    server.state["faults"][path], server.state["budget"][path] = "corrupt", 2
    root = tmp_path / "repo"
    with pytest.raises(DownloadError) as err:
        download.run(_params(tmp_path, _url(server), retries=1), ProjectPaths(root))
    message = str(err.value)
    good = sha256(tiny_path(server, "vis/b.png"))
    body = tiny_path(server, "vis/b.png").read_bytes()
    bad = hashlib.sha256(body[:-1] + bytes([body[-1] ^ 0xFF])).hexdigest()
    assert f"https://{HOST}/vis/b.png" in message and good in message and bad in message
    assert server.state["requests"].count(path) == 2  # retried once, corrupt both times
    assert not (tmp_path / "cache" / HOST / "vis/b.png").exists()
    assert not [p for p in _no_leftovers(tmp_path / "cache") if p.name.startswith("tmp")]
    assert not (root / "data/raw").exists() and not (root / "data/weights").exists()
    assert not list((root / "data").iterdir())  # no half-built folders either


def test_connection_dropped_half_way_then_retry_succeeds(tmp_path, server):
    path = f"/{HOST}/ir/c.png"
    target = tmp_path / "cache" / HOST / "ir/c.png"
    server.state["faults"][path], server.state["budget"][path] = "drop", 1
    request = Request(f"{HOST}/ir/c.png", f"https://{HOST}/ir/c.png",
                      f"sha256:{sha256(tiny_path(server, 'ir/c.png'))}")  # fmt: skip
    with pytest.raises(DownloadError, match=f"https://{HOST}/ir/c.png"):
        fetch_all([request], tmp_path / "cache", _url(server), retries=0)
    assert not target.exists()  # the interrupted download left nothing at the target
    assert not [p for p in _no_leftovers(tmp_path / "cache") if p.name.startswith("tmp")]

    server.state["budget"][path] = 1  # a transient drop: the retry gets the whole file
    paths = fetch_all([request], tmp_path / "cache", _url(server), retries=1)
    assert paths[request.key] == target and sha256(target) == request.known_hash[7:]
    assert server.state["requests"].count(path) == 3


@pytest.mark.parametrize("form", ["folder", "file_url"])
def test_folder_and_file_url_mirrors_are_verified_copies(tmp_path, tiny, form, monkeypatch):
    mirror = str(tiny) if form == "folder" else tiny.as_uri()
    index = download.run(_params(tmp_path, mirror), ProjectPaths(tmp_path / "repo"))
    assert len(index) == 5
    (tiny / HOST / "ir/a.png").write_bytes(b"tampered")
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download.run(_params(tmp_path, mirror), ProjectPaths(tmp_path / "repo2"))


def test_mirror_env_wins_and_missing_mirror_is_clear(tmp_path, tiny, monkeypatch):
    monkeypatch.setenv("COCONET_MIRROR", str(tiny))
    assert (
        len(download.run(_params(tmp_path, "/nonexistent"), ProjectPaths(tmp_path / "repo"))) == 5
    )
    monkeypatch.delenv("COCONET_MIRROR")
    with pytest.raises(DownloadError, match="/nonexistent: no such directory"):
        download.run(_params(tmp_path, "/nonexistent"), ProjectPaths(tmp_path / "repo"))


def test_pair_size_mismatch_stops_stage_naming_pair_and_sizes(tmp_path, tiny):
    _write_png(tiny / HOST / "vis/c.png", np.zeros((10, 10, 3), np.uint8))
    cat = catalogue.DATASETS_DIR / "tinytrain.tsv"
    lines = cat.read_text().splitlines()
    fixed = [
        "\t".join([*line.split("\t")[:3], sha256(tiny / HOST / "vis/c.png"), "1"])
        if line.startswith("c\tvis") else line
        for line in lines
    ]  # fmt: skip
    cat.write_text("\n".join(fixed) + "\n")
    root = tmp_path / "repo"
    with pytest.raises(DownloadError, match=r"tinytrain/c: infrared is 32x24 .* vis is 10x10"):
        download.run(_params(tmp_path, str(tiny)), ProjectPaths(root))
    assert not list((root / "data").iterdir())


def test_weights_offline_error_names_url_and_the_way_out(tmp_path, tiny):
    with pytest.raises(DownloadError) as err:
        download.run(
            _params(tmp_path, str(tiny), vgg19="imagenet"), ProjectPaths(tmp_path / "repo")
        )
    message = str(err.value)
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert "COCONET_MIRROR" in message and "download.vgg19=none" in message


def test_sam_checkpoint_is_md5_verified_and_placed_in_data_weights(tmp_path, tiny, monkeypatch):
    blob = tiny / "dl.example.org/sam/sam_vit_b_test.pth"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"not really a checkpoint")
    md5 = hashlib.md5(blob.read_bytes()).hexdigest()
    weight = Weight("sam", "vit_b", "https://dl.example.org/sam/sam_vit_b_test.pth",
                    f"md5:{md5}", "data/weights/sam_vit_b.pth")  # fmt: skip
    monkeypatch.setattr(download, "load_weights", lambda: {("sam", "vit_b"): weight})
    root = tmp_path / "repo"
    download.run(_params(tmp_path, str(tiny), sam="vit_b"), ProjectPaths(root))
    assert (root / "data/weights/sam_vit_b.pth").read_bytes() == blob.read_bytes()
    assert f"md5:{md5}" in (root / "data/weights/README.txt").read_text()
    bad = Weight("sam", "vit_b", weight.url, "md5:" + "0" * 32, weight.target)
    monkeypatch.setattr(download, "load_weights", lambda: {("sam", "vit_b"): bad})
    with pytest.raises(DownloadError, match="0" * 32):
        download.run(_params(tmp_path, str(tiny), sam="vit_b"), ProjectPaths(tmp_path / "repo2"))


def test_unknown_dataset_lists_the_catalogue(tmp_path, tiny):
    with pytest.raises(CatalogueError, match="tinytest, tinytrain"):
        download.run(
            _params(tmp_path, str(tiny), datasets=["nope"]), ProjectPaths(tmp_path / "repo")
        )


MIRROR = Path(os.environ.get("COCONET_MIRROR") or PROJECT_ROOT.parent / "shared" / "mirror")


@pytest.mark.skipif(not (MIRROR / "MANIFEST.tsv").is_file(), reason=f"no data mirror at {MIRROR}")
def test_real_catalogue_matches_the_mirror_and_keeps_test_scenes_out_of_training():
    manifest = pd.read_csv(MIRROR / "MANIFEST.tsv", sep="\t").set_index("url")["sha256"]
    counts = {}
    for name in ("tno40", "tno_masked", "roadscene", "m3fd"):
        dataset = catalogue.load_dataset(name)
        for entry in dataset.files:
            assert manifest[entry.url] == entry.sha256
            assert sha256(MIRROR / entry.key) == entry.sha256
        counts[name] = {s: [dataset.split_of(p) for p in dataset.pairs()].count(s)
                        for s in ("train", "val", "test", "unused")}  # fmt: skip
    assert counts == {
        "tno40": {"train": 0, "val": 0, "test": 21, "unused": 19},
        "tno_masked": {"train": 19, "val": 0, "test": 0, "unused": 1},
        "roadscene": {"train": 187, "val": 11, "test": 23, "unused": 0},
        "m3fd": {"train": 0, "val": 0, "test": 30, "unused": 0},
    }
    published = load_published("coconet_authors")
    assert len(published.files) == 37
    for entry in published.files:
        assert manifest[entry.url] == entry.sha256
        assert sha256(MIRROR / entry.key) == entry.sha256
    masked = catalogue.load_dataset("tno_masked").pairs()
    assert sum("mask" in roles for roles in masked.values()) == 20


def test_local_dataset_files_are_verified_in_place(tmp_path, tiny):
    root = tmp_path / "repo"
    rng = np.random.default_rng(3)
    rows = []
    for role in ("ir", "vis"):
        path = root / f"incoming/x1/{role}.png"
        _write_png(path, rng.integers(0, 256, (12, 14), np.uint8))
        url = f"incoming/x1/{role}.png"
        rows.append(f"x1\t{role}\t{url}\t{sha256(path)}\t{path.stat().st_size}")
    (catalogue.DATASETS_DIR / "mine.tsv").write_text(
        "pair\trole\turl\tsha256\tbytes\n" + "\n".join(rows) + "\n"
    )
    (catalogue.DATASETS_DIR / "mine.yaml").write_text(
        "split: train\nlocal: true\nfiles: mine.tsv\n"
    )
    index = download.run(
        _params(tmp_path, str(tiny), datasets=["tinytrain", "mine"]), ProjectPaths(root)
    )
    row = index.set_index("pair_id").loc["mine/x1"]
    assert (row.split, row.width, row.height, row.ir_url) == ("train", 14, 12, "incoming/x1/ir.png")
    assert (root / row.vis).is_file()
    (root / "incoming/x1/vis.png").write_bytes(b"changed")
    with pytest.raises(DownloadError, match="incoming/x1/vis.png: sha256 is"):
        download.run(_params(tmp_path, str(tiny), datasets=["mine"]), ProjectPaths(root))
    assert (root / row.vis).is_file()  # the previous data/raw is untouched by the failed run


@pytest.mark.skipif(not (MIRROR / "MANIFEST.tsv").is_file(), reason=f"no data mirror at {MIRROR}")
def test_published_fusions_of_downloaded_pairs_are_fetched_and_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    index = download.run(_params(tmp_path, str(MIRROR), datasets=["tno40"]), ProjectPaths(root))
    published = pd.read_csv(root / "data/raw/published.csv", dtype=str)
    matched = {f"tno40/{n}" for n in (1, 2, 3, 9, 13, 16, 17, 20, 29, 30, 31, 37, 38, 39)}
    assert set(published["pair_id"]) == matched and set(published["published"]) == {
        "coconet_authors"
    }
    sizes = index.set_index("pair_id")[["width", "height"]]
    for row in published.itertuples():
        with Image.open(root / row.fused) as image:
            assert image.mode == "L" and image.size == tuple(sizes.loc[row.pair_id])
    exact = published[published["method"] == "pixel-exact"]["pair_id"]
    assert set(exact) == {f"tno40/{n}" for n in (9, 13, 29, 31, 37, 38)}


@pytest.mark.skipif(not (MIRROR / "MANIFEST.tsv").is_file(), reason=f"no data mirror at {MIRROR}")
def test_m3fd_infrared_stored_as_rgb_becomes_one_channel():
    entry = catalogue.load_dataset("m3fd").pairs()["00042"]["ir"]
    rgb = download.read_image(MIRROR / entry.key)
    grey = download._normalise(rgb, keep_colour=False)
    assert rgb.ndim == 3 and grey.shape == rgb.shape[:2]
    assert np.array_equal(grey, np.rint(rgb[..., 0] * 255).astype(np.uint8))
