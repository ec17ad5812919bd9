"""A shrunk copy of this project for end-to-end runs of the real pipeline: the same code, the
catalogue cut to a few small pairs, tiny params (no SAM, random VGG, one short epoch per phase).
Used by the slow tests and by benchmarks/bench_flows.py."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from flows.overrides import compose_params
from pipeline.catalogue import load_dataset
from pipeline.core.params import PROJECT_ROOT
from tests.helpers.mirror import mirror_dir

TINY_PARAMS = [
    "download.datasets=[tno40,tno_masked]",
    "download.vgg19=none",
    "download.sam=none",
    "download.official=none",
    "download.workers=2",
    "model.vgg_weights=random",
    "masks.method=ir_saliency",
    "masks.preview_pairs=1",
    "patches.patch_size=32",
    "patches.stride=32",
    "patches.max_per_pair=4",
    "train.batch_size=4",
    "train.phase1_epochs=1",
    "train.phase2_epochs=1",
    "train.max_steps_per_epoch=1",
    "train.log_every=1",
    "evaluate.gallery_pairs=1",
]


def project_files() -> list[str]:
    """This checkout's files, tracked or untracked but not ignored, relative to its root."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.splitlines() if (PROJECT_ROOT / f).is_file()]


def _shrink_catalogue(root: Path, keep: dict[str, int]) -> None:
    """Keep the ``n`` smallest usable pairs (test pairs for a test set) of each dataset."""
    for name, n in keep.items():
        dataset = load_dataset(name)
        sizes = {
            pair: sum(f.bytes for f in files.values())
            for pair, files in dataset.pairs().items()
            if dataset.split_of(pair) == dataset.split
        }
        chosen = set(sorted(sizes, key=lambda p: (sizes[p], p))[:n])
        tsv = root / "pipeline/catalogue/datasets" / f"{name}.tsv"
        with open(tsv, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        with open(tsv, "w", newline="") as handle:
            writer = csv.DictWriter(
                handle, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n"
            )
            writer.writeheader()
            writer.writerows(r for r in rows if r["pair"] in chosen)
        _drop_listed_exclusions(root / "pipeline/catalogue/datasets" / f"{name}.yaml", chosen)


def _drop_listed_exclusions(entry: Path, kept: set[str]) -> None:
    """Exclude rules that list pairs by name keep only the pairs still catalogued (the loader
    refuses a rule naming unknown pairs); a rule left with none is removed."""
    meta = yaml.safe_load(entry.read_text())
    rules = meta.get("exclude") or []
    rules = [rules] if isinstance(rules, dict) else rules
    for rule in rules:
        if "pairs" in rule:
            rule["pairs"] = [p for p in map(str, rule["pairs"]) if p in kept]
    meta["exclude"] = [r for r in rules if "pairs" not in r or r["pairs"]]
    entry.write_text(yaml.safe_dump(meta, sort_keys=False))


def make_tiny_project(dst: Path, test_pairs: int = 2, train_pairs: int = 2) -> Path:
    """Copy the project (tracked and untracked-not-ignored files) to ``dst``, shrink it, and
    commit it in a fresh git repository (DVC needs one; the commit is a lineage tag)."""
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / rel, target)
    for stale in ("dvc.lock",):  # the copy starts from nothing
        (dst / stale).unlink(missing_ok=True)
    _shrink_catalogue(dst, {"tno40": test_pairs, "tno_masked": train_pairs})
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    compose_params(dst, ["schedule=quick", *TINY_PARAMS])
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    subprocess.run([*git, "commit", "-qm", "tiny project"], cwd=dst, check=True)
    return dst


def project_env(root: Path, cache: Path) -> dict[str, str]:
    """Environment for subprocesses working in the copy: its own stores, this interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "COCONET_CACHE": str(cache),
            "COCONET_MIRROR": str(mirror_dir() or ""),
            "TORCH_HOME": str(cache / "torch"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def coconet(root: Path) -> list[str]:
    """Command prefix running the copy's own CLI (its code, its PROJECT_ROOT)."""
    return [sys.executable, "-c", "from pipeline.cli import main; main()"]
