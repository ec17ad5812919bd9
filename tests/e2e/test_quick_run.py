"""The README's offline quick run, end to end on the real mirrored data (slow).

A copy of the project runs the exact command between the README's ``quick-run`` markers, then
checks what a newcomer relies on: reports, gallery, a registered champion, a no-op second
``dvc repro``, fusing with ``models:/coconet@champion``, and ``coconet lineage --verify``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.core.params import PROJECT_ROOT
from pipeline.metrics import METRIC_NAMES
from tests.helpers.mirror import mirror_dir
from tests.helpers.tiny_project import coconet, project_env, project_files

pytestmark = pytest.mark.slow


def readme_quick_command() -> list[str]:
    """The quick-run command from the README, as argv (``uv run`` dropped: we are in the env)."""
    text = (PROJECT_ROOT / "README.md").read_text()
    block = re.search(r"<!-- quick-run -->\s*```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no quick-run block"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    assert words[0].startswith("COCONET_MIRROR=") and words[1:3] == ["uv", "run"]
    return words[3:]


@pytest.fixture(scope="module")
def quick_project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    if mirror_dir() is None:
        pytest.skip("public data mirror not found (../shared/mirror or COCONET_MIRROR)")
    root = tmp_path_factory.mktemp("quick") / "coconet"
    for rel in project_files():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / rel, root / rel)
    (root / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "clean clone"], cwd=root, check=True)
    env = project_env(root, tmp_path_factory.mktemp("cache"))
    run = subprocess.run(
        readme_quick_command(), cwd=root, env=env, capture_output=True, text=True, timeout=2400
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, env


def test_quick_run_fills_reports_and_registers_a_champion(quick_project):
    root, _ = quick_project
    metrics = json.loads((root / "reports/metrics.json").read_text())
    assert set(METRIC_NAMES) <= set(metrics["tno40"])
    summary = json.loads((root / "reports/evaluation/summary.json").read_text())
    # 40 TNO pairs minus 19 trained-on scenes; the quick schedule's caps; the authors' results
    # cover 6 tno40 test pairs
    view = "tno40:coconet_authors"
    assert summary["test_pairs"] == {"m3fd": 3, "roadscene": 6, "tno40": 21, view: 6}
    assert set(metrics) == set(summary["test_pairs"])
    comparison = json.loads((root / "reports/comparison.json").read_text())
    assert {"average", "max", "laplacian"} <= set(comparison["tno40"])
    assert "coconet_authors_reference" in comparison[view]
    assert "coconet_authors_reference" not in comparison["tno40"]
    assert len(list((root / "reports/evaluation/gallery").glob("*.png"))) >= 1
    masks = json.loads((root / "reports/masks.json").read_text())
    assert 0.0 < masks["mask_iou"] <= 1.0
    assert json.loads((root / "reports/masks_summary.json").read_text())["method"] == "ir_saliency"
    registered = json.loads((root / "artifacts/registered.json").read_text())
    assert registered["alias"] == "champion"


def test_second_repro_reuses_everything(quick_project):
    root, env = quick_project
    run = subprocess.run(
        ["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    assert "Running stage" not in run.stdout
    assert "up to date" in run.stdout


def test_fuse_with_the_champion_from_a_fresh_process(quick_project, tmp_path):
    root, env = quick_project
    pair = sorted((root / "data/raw/tno40/ir").glob("*.png"))[0].name
    ir, vis = f"data/raw/tno40/ir/{pair}", f"data/raw/tno40/vis/{pair}"
    out = tmp_path / "fused.png"
    run = subprocess.run(
        [*coconet(root), "fuse", "--model", "models:/coconet@champion",
         "--ir", ir, "--vis", vis, "-o", str(out)],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert out.is_file()


def test_lineage_verify_finds_no_drift(quick_project):
    root, env = quick_project
    run = subprocess.run(
        [*coconet(root), "lineage", "--verify", "--json"],
        cwd=root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    lineage = json.loads(run.stdout)
    assert lineage["model"]["aliases"] == ["champion"]
    assert lineage["vgg_weights"] == "random"
    assert {"download", "masks", "patches", "train", "evaluate"} <= set(lineage["dvc"])
    assert {d["name"] for d in lineage["datasets"]} == {"tno40", "tno_masked", "roadscene", "m3fd"}
    assert lineage["verify"] and all(item["ok"] for item in lineage["verify"])
