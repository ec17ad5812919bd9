"""``--model official``: the authors' model fetched through the catalogue (mirror, git blob id),
converted once and cached; offline it fails naming the URL and the mirror option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models.coconet import CoCoNet
from pipeline.catalogue import load_weights, url_key
from pipeline.catalogue import loader as catalogue
from pipeline.catalogue.fetch import DownloadError, git_blob_id
from pipeline.core.imageio import write_image
from pipeline.core.params import PROJECT_ROOT
from pipeline.inference import load_fusion_model
from tests.helpers.models import CPU_FP32

SHARED = PROJECT_ROOT.parent / "shared" / "official_coconet"
needs_shared = pytest.mark.skipif(
    not (SHARED / "latest.pth").is_file(), reason=f"no official-format checkpoint in {SHARED}"
)
OFFICIAL = load_weights()[("coconet", "official")]


def test_the_catalogue_pins_the_published_file_by_git_blob_id():
    assert OFFICIAL.url.startswith("https://raw.githubusercontent.com/runjia0124/CoCoNet/")
    assert OFFICIAL.url.endswith("/logs/latest.pth")
    assert OFFICIAL.known_hash == "gitblob:8164c356a99207de3c5c973a64dd472621c44e17"


def test_git_blob_id_is_gits(tmp_path):
    path = tmp_path / "hello"
    path.write_bytes(b"hello\n")
    assert git_blob_id(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object


def test_offline_without_a_mirror_copy_fails_naming_url_and_mirror(tmp_path):
    pair = [tmp_path / "ir.png", tmp_path / "vis.png"]
    for path in pair:
        write_image(path, np.full((32, 32), 0.5))
    (tmp_path / "mirror").mkdir()
    env = {**os.environ, "COCONET_MIRROR": str(tmp_path / "mirror")}
    env["COCONET_CACHE"] = str(tmp_path / "cache")
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "fuse", "--model", "official", "--ir", str(pair[0]),
         "--vis", str(pair[1]), "-o", str(tmp_path / "out.png")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert OFFICIAL.url in result.stderr and "COCONET_MIRROR" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out.png").exists()


@pytest.fixture
def mirrored_official(tmp_path, monkeypatch) -> Path:
    """A mirror holding the shared stand-in at the official URL's path, and a catalogue whose
    git blob id is the stand-in's (the real file cannot be fetched here)."""
    mirror = tmp_path / "mirror"
    target = mirror / url_key(OFFICIAL.url)
    target.parent.mkdir(parents=True)
    target.write_bytes((SHARED / "latest.pth").read_bytes())
    weights = yaml.safe_load(catalogue.WEIGHTS_FILE.read_text())
    weights["coconet"]["official"]["hash"] = f"gitblob:{git_blob_id(target)}"
    (tmp_path / "weights.yaml").write_text(yaml.safe_dump(weights))
    monkeypatch.setattr(catalogue, "WEIGHTS_FILE", tmp_path / "weights.yaml")
    monkeypatch.setenv("COCONET_MIRROR", str(mirror))
    monkeypatch.setenv("COCONET_CACHE", str(tmp_path / "cache"))
    return target


@needs_shared
def test_official_from_a_mirror_reproduces_the_official_output_and_is_cached(mirrored_official):
    pair = np.load(SHARED / "pair.npz")
    model = load_fusion_model("official", CPU_FP32)
    with torch.inference_mode():
        fused = model(torch.from_numpy(pair["vis"]), torch.from_numpy(pair["ir"]))
    assert float((fused - torch.from_numpy(pair["fused"])).abs().max()) < 1e-4
    mirrored_official.unlink()  # converted once: the cache serves the next load
    load_fusion_model("official", CPU_FP32)


@needs_shared
def test_a_file_with_another_blob_id_is_refused_and_not_kept(mirrored_official, tmp_path):
    mirrored_official.write_bytes(mirrored_official.read_bytes() + b"tampered")
    with pytest.raises(DownloadError, match="git blob id .* does not match"):
        load_fusion_model("official", CPU_FP32)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("latest.pth"))


@needs_shared
def test_a_file_planted_in_the_converted_cache_is_not_used(mirrored_official, tmp_path):
    pair = np.load(SHARED / "pair.npz")
    load_fusion_model("official", CPU_FP32)  # converts once into the cache
    (cached,) = (tmp_path / "cache" / "converted").glob("coconet_official-*.pt")
    torch.manual_seed(1)
    planted = CoCoNet(vgg_weights="random").eval()
    torch.save({"state_dict": planted.state_dict(), "vgg_weights": "random"}, cached)
    model = load_fusion_model("official", CPU_FP32)  # re-verified: converted afresh
    with torch.inference_mode():
        fused = model(torch.from_numpy(pair["vis"]), torch.from_numpy(pair["ir"]))
    assert float((fused - torch.from_numpy(pair["fused"])).abs().max()) < 1e-4
