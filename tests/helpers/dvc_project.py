"""A tiny git + DVC project with three trivial python stages (download, evaluate, register),
the real params.yaml and catalogue layout, for flow and inbox tests; and the inbox pairs and
workspace snapshots those tests compare."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from pipeline.core.imageio import write_image
from pipeline.core.params import PROJECT_ROOT

STAGES_PY = """
import json, os, pathlib, sys, time
import numpy as np
import yaml
from PIL import Image
stage = sys.argv[1]
if os.environ.get("TINY_FAIL") == stage:
    sys.exit(f"error: {stage} failed on purpose")  # one line, as pipeline.core.stage prints
if pathlib.Path(f".hang-{stage}").exists():  # a stage that hangs until killed
    pathlib.Path(f".hanging-{stage}").write_text(str(os.getpid()))
    time.sleep(3600)
if stage == "download":
    datasets = yaml.safe_load(open("params.yaml"))["download"]["datasets"]
    tsv = pathlib.Path("pipeline/catalogue/datasets/inbox.tsv")
    rows = tsv.read_text().splitlines()[1:] if "inbox" in datasets and tsv.exists() else []
    for row in rows:
        assert pathlib.Path(row.split("\\t")[2]).is_file(), row
    raw = pathlib.Path("data/raw")
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "count.txt").write_text(str(len(rows)))
    y, x = np.mgrid[0:96, 0:128]
    test = {"ir": 128 + 60 * np.sin(x / 7) * np.cos(y / 11) + 40 * np.sin((x + y) / 17),
            "vis": 128 + 70 * np.cos(x / 9 + y / 13) * np.sin(y / 6)}
    for role, image in test.items():
        (raw / "tiny" / role).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(raw / "tiny" / role / "t1.png")
    (raw / "index.csv").write_text(
        "pair_id,dataset,pair,split,ir,vis\\n"
        "tiny/t1,tiny,t1,test,data/raw/tiny/ir/t1.png,data/raw/tiny/vis/t1.png\\n"
    )
    pathlib.Path("data/weights").mkdir(parents=True, exist_ok=True)
    pathlib.Path("data/weights/README.txt").write_text("no weights\\n")
elif stage == "evaluate":
    pathlib.Path("reports").mkdir(exist_ok=True)
    pathlib.Path("reports/metrics.json").write_text(json.dumps({"tiny": {"VIF": 0.5, "Nabf": 0.1}}))
    others = {"tiny": {"average": {"VIF": 0.25}}}
    pathlib.Path("reports/comparison.json").write_text(json.dumps(others))
elif stage == "register":
    n = pathlib.Path("data/raw/count.txt").read_text()
    pathlib.Path("artifacts").mkdir(exist_ok=True)
    record = {"name": "coconet", "version": n, "alias": "champion", "decision": "promoted",
              "reason": f"{n} inbox files", "tracking_uri": "sqlite:///mlflow.db"}
    pathlib.Path("artifacts/registered.json").write_text(json.dumps(record))
"""

DVC_YAML = {
    "stages": {
        "download": {
            "cmd": "python stages.py download",
            "deps": ["stages.py", "pipeline/catalogue"],
            "params": ["download.datasets"],
            "outs": ["data/raw", "data/weights"],
        },
        "evaluate": {
            "cmd": "python stages.py evaluate",
            "deps": ["data/raw"],
            "outs": [  # uncached: the rollback's copy-aside path for `cache: false` outputs
                {"reports/metrics.json": {"cache": False}},
                {"reports/comparison.json": {"cache": False}},
            ],
        },
        "register": {
            "cmd": "python stages.py register",
            "deps": ["data/raw", "reports/metrics.json"],
            "outs": ["artifacts/registered.json"],  # cached, as in dvc.yaml
        },
    }
}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def make_dvc_project(tmp_path: Path) -> Path:
    """A git + DVC project with three trivial stages and the real params.yaml and conf/."""
    root = tmp_path / "tiny"
    (root / "pipeline/catalogue/datasets").mkdir(parents=True)
    (root / "pipeline/catalogue/datasets/README").write_text("catalogue\n")
    shutil.copyfile(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf")
    (root / "stages.py").write_text(STAGES_PY)
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    shutil.copyfile(PROJECT_ROOT / ".dvc" / "config", root / ".dvc" / "config")  # hydra on
    return root


def write_pair(folder: Path, size=(72, 96), vis_size=None, ext=".png") -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(zlib.crc32(folder.name.encode()))  # other names, other images
    write_image(folder / f"ir{ext}", rng.random(size).astype(np.float32))
    write_image(folder / f"vis{ext}", rng.random((*(vis_size or size), 3)).astype(np.float32))
    return folder


def workspace_state(root: Path) -> dict[str, bytes]:
    """Every file a retrain may change: data, outputs, incoming, catalogue, params, dvc.lock."""
    tops = ("data", "reports", "artifacts", "incoming", "pipeline")
    names = ("params.yaml", "dvc.lock", "incoming.dvc", ".gitignore")
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
        and (path.relative_to(root).parts[0] in tops or path.name in names)
        and not path.relative_to(root).parts[0].startswith(".")
    }


def edited_test_copy(root: Path, folder: Path) -> None:
    """An edited copy of the tiny project's test pair: cropped, brighter, saved as BMP."""
    folder.mkdir(parents=True)
    for role in ("ir", "vis"):
        image = np.asarray(Image.open(root / f"data/raw/tiny/{role}/t1.png"), dtype=np.int16)
        edited = np.clip(image[3:-5, 4:-2] + 25, 0, 255).astype(np.uint8)
        Image.fromarray(edited).save(folder / f"{role}.bmp")
