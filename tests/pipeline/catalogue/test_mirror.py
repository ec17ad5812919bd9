"""``coconet mirror build``: a verified HOST/PATH copy of the catalogued files, from the
public URLs or another mirror (a folder, ``file://`` or an HTTP server)."""

from __future__ import annotations

import csv
import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.catalogue.fetch import Request, fetch_all, file_requests
from pipeline.catalogue.loader import load_dataset
from pipeline.catalogue.published import load_published
from pipeline.cli import app
from pipeline.core.errors import CoconetError
from tests.helpers.mirror import mirror_dir

runner = CliRunner()
DATASET = "tno_masked"  # the smallest catalogued dataset


@pytest.fixture
def source() -> Path:
    found = mirror_dir()
    if found is None:
        pytest.skip("public data mirror not found (../shared/mirror or COCONET_MIRROR)")
    return found


def _build(target: Path, *args: str):
    return runner.invoke(
        app, ["mirror", "build", str(target), "--dataset", DATASET, "--no-weights", *args]
    )


def _manifest(target: Path) -> dict[str, dict[str, str]]:
    with (target / "MANIFEST.tsv").open(newline="") as handle:
        return {row["url"]: row for row in csv.DictReader(handle, delimiter="\t")}


def test_a_built_mirror_serves_the_download_code(source, tmp_path):
    target = tmp_path / "mirror"
    result = _build(target, "--source", str(source))
    assert result.exit_code == 0, result.output
    files = load_dataset(DATASET).files
    manifest = _manifest(target)
    assert set(manifest) == {f.url for f in files}
    for f in files:
        assert manifest[f.url]["sha256"] == f.sha256
        assert (target / f.key).stat().st_size == int(manifest[f.url]["bytes"]) == f.bytes
    requests = [Request(f.key, f.url, f"sha256:{f.sha256}") for f in files[:3]]
    fetched = fetch_all(requests, tmp_path / "cache", str(target), workers=2)
    assert all(p.is_file() for p in fetched.values())


def test_published_sets_are_mirrored_too(source, tmp_path):
    target = tmp_path / "mirror"
    result = runner.invoke(
        app, ["mirror", "build", str(target), "--dataset", "coconet_authors", "--no-weights",
              "--source", str(source)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    files = load_published("coconet_authors").files
    assert set(_manifest(target)) == {f.url for f in files} and len(files) == 37


def test_built_from_a_web_server_and_from_file_urls(source, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = _build(tmp_path / "web", "--source", url)
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    result = _build(tmp_path / "file", "--source", source.as_uri())
    assert result.exit_code == 0, result.output
    assert _manifest(tmp_path / "web") == _manifest(tmp_path / "file")


def test_a_damaged_source_file_is_refused_and_not_kept(source, tmp_path):
    copy = tmp_path / "source"
    first = load_dataset(DATASET).files[0]
    for f in load_dataset(DATASET).files:  # the dataset's files only, under their own paths
        (copy / f.key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / f.key, copy / f.key)
    (copy / first.key).write_bytes(b"not the published file")
    target = tmp_path / "mirror"
    result = _build(target, "--source", str(copy), "--retries", "0")
    assert result.exit_code != 0 and isinstance(result.exception, CoconetError)
    assert first.url in str(result.exception) and "checksum" in str(result.exception)
    assert not (target / first.key).exists() and not (target / "MANIFEST.tsv").exists()


def test_unknown_names_are_one_line_errors(tmp_path):
    for option, value in (("--dataset", "nope"), ("--weights", "sam:big")):
        result = runner.invoke(app, ["mirror", "build", str(tmp_path / "m"), option, value])
        assert result.exit_code != 0 and isinstance(result.exception, CoconetError)
        assert value in str(result.exception)
    result = runner.invoke(app, ["mirror", "build", str(tmp_path / "m"), "--weights", "sam"])
    assert result.exit_code == 2 and "FAMILY:VARIANT" in result.output


def test_requests_are_sha256_checked_once_per_url_for_datasets_and_published_sets():
    files = list(load_dataset(DATASET).files)
    authors = list(load_published("coconet_authors").files)
    requests = file_requests(files + files[:3] + authors)
    assert len(requests) == len({f.url for f in files + authors})
    first = requests[0]
    assert first.url == files[0].url and first.known_hash == f"sha256:{files[0].sha256}"
    assert first.key == files[0].url.partition("://")[2]
    last = requests[-1]
    assert last.url == authors[-1].url and last.known_hash == f"sha256:{authors[-1].sha256}"
