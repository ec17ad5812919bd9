"""ProjectPaths mirrors dvc.yaml: every stage output and data dependency there has one name
here, every path lives under the root it was given, and the project files it names exist."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.core.params import PROJECT_ROOT
from pipeline.core.paths import ProjectPaths

NAMES = sorted(name for name, value in vars(ProjectPaths).items() if isinstance(value, property))


def _all(paths: ProjectPaths) -> dict[str, Path]:
    return {name: getattr(paths, name) for name in NAMES}


def test_every_path_is_under_the_root_it_was_given(tmp_path):
    for root in (tmp_path / "proj", Path("relative/proj")):
        for name, path in _all(ProjectPaths(root)).items():
            assert path.is_relative_to(root) and path != root, name


def test_each_path_has_one_name():
    paths = _all(ProjectPaths(Path("/p")))
    assert len(set(paths.values())) == len(paths), "two names for one path"


def test_every_dvc_output_and_data_dependency_is_named():
    paths = _all(ProjectPaths(PROJECT_ROOT)).values()
    named = {p.relative_to(PROJECT_ROOT).as_posix() for p in paths}
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    files = set()
    for stage in stages.values():
        files |= {*stage.get("outs", []), *stage.get("metrics", [])}
        files |= {d for d in stage.get("deps", []) if d.split("/")[0] in ("data", "artifacts")}
    assert files - named == set()
    assert "artifacts/checkpoints" in named - files  # local resume state, never a DVC output


@pytest.mark.parametrize("name", ["params", "catalogue_datasets"])
def test_the_project_files_it_names_exist_in_the_checkout(name):
    assert getattr(ProjectPaths(PROJECT_ROOT), name).exists()
