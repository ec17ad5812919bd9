"""The architecture stays visible: dvc.yaml deps cover what each stage imports, no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "models", "flows")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The project file defining ``module`` (a package's ``__init__.py``), None if external."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every project module ``path`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def with_parents(module: str) -> list[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: importing a module runs its packages' inits."""
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def has_code(path: Path) -> bool:
    """False for a file holding only a docstring (a package marker cannot change behaviour)."""
    body = ast.parse(path.read_text()).body
    return not (len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body))


def imported_files(start: Path, root: Path = ROOT) -> set[Path]:
    """Project files with code that ``start`` needs, transitively (package inits included)."""
    seen: set[Path] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            for name in with_parents(module):
                file = module_file(name, root)
                if file is not None and file not in seen:
                    todo.append(file)
    return {path for path in seen if has_code(path)}


def uncovered(stage: dict, root: Path = ROOT) -> list[str]:
    """Files a stage's module imports that none of its dvc.yaml deps covers."""
    module = stage["cmd"].split("-m ", 1)[1].split()[0]
    deps = [root / d for d in stage.get("deps", [])]
    missing = []
    for file in sorted(imported_files(module_file(module, root), root)):
        if not any(file == d or d in file.parents for d in deps):
            missing.append(file.relative_to(root).as_posix())
    return missing


def unit(module: str) -> str:
    """The package a module belongs to: ``models``, ``flows`` or ``pipeline.<sub>``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def package_graph(root: Path = ROOT) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
            src = unit(".".join(parts))
            graph.setdefault(src, set())
            for module in imported_modules(path):
                dst = unit(module)
                if dst != src:
                    graph[src].add(dst)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_imported_file(name):
    assert uncovered(STAGES[name]) == [], f"dvc.yaml stage {name} misses these deps"


def test_a_missing_dep_is_caught():
    stage = dict(STAGES["evaluate"])
    stage["deps"] = [d for d in stage["deps"] if d != "pipeline/metrics"]
    assert "pipeline/metrics/compute.py" in uncovered(stage)


def test_every_stage_module_is_a_dvc_stage():
    modules = {p.stem for p in (ROOT / "pipeline" / "stages").glob("*.py") if p.stem != "__init__"}
    assert modules == set(STAGES)
    for name, stage in STAGES.items():
        assert stage["cmd"].startswith(f"python -m pipeline.stages.{name}")


def test_no_import_cycle_between_packages():
    assert find_cycle(package_graph()) is None


def test_dependency_direction():
    graph = package_graph()
    assert not {d for d in graph.get("models", set()) if d.startswith("pipeline")}
    for src, dsts in graph.items():
        if src.startswith("pipeline"):
            assert "flows" not in dsts, f"{src} imports flows"


def test_a_planted_cycle_is_caught(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pipeline" / "a.py").write_text("from pipeline.b import x\n")
    (tmp_path / "pipeline" / "b.py").write_text("from pipeline.a import y\n")
    (tmp_path / "models" / "net.py").write_text("import pipeline.a\n")
    graph = package_graph(tmp_path)
    assert find_cycle(graph) in (
        ["pipeline.a", "pipeline.b", "pipeline.a"],
        ["pipeline.b", "pipeline.a", "pipeline.b"],
    )
    assert "pipeline.a" in graph["models"]
