"""The architecture stays visible: dvc.yaml deps cover what each stage imports, no import cycles."""

from __future__ import annotations

import ast
import re
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


# --- one place for each concern -----------------------------------------------------------

LAZY_IMPORTS = {  # module -> why it imports inside functions (measured, needed; README too)
    "pipeline/cli/tools.py": "the CLI answers --help and argument errors without torch/mlflow; "
    "fuse never loads the params models (pydantic, 0.1 s)",
    "pipeline/cli/official.py": "the CLI answers --help and argument errors without torch",
    "pipeline/cli/mirror.py": "fusing and --help never import pooch/requests (the fetch code) "
    "or the params models (pydantic, 0.1 s)",
    "pipeline/cli/stages.py": "the stage entry and its params models (pydantic, 0.1 s) only "
    "when a stage command runs, not for fuse",
    "flows/cli.py": "the CLI answers --help without Prefect (2-3 s to import)",
    "pipeline/core/placement.py": "params and the CLI read the vocabulary without torch",
    "pipeline/inference.py": "mlflow (about 2 s) only for a model URI neither SQLite nor a "
    "server's REST API answers, rest_registry (urllib, 0.05 s) only for a server, pooch/requests "
    "(0.15 s) only for the official model: none of them for a model file",
    "pipeline/stages/masks.py": "torch and segment-anything only for masks.method: sam",
    "pipeline/core/decoding.py": "tifffile (0.2 s) only for TIFF inputs, not on fuse's PNG path",
    "pipeline/core/imageio.py": "tifffile (0.2 s) only for TIFF outputs, not on fuse's PNG path",
    "models/vgg.py": "torchvision (about 2 s: torch._dynamo, sympy) only for ImageNet weights",
    "pipeline/fusion_plan.py": "cv2 (0.08 s) only to resize an infrared image (--resize)",
}
MLFLOW_DOOR = "pipeline/tracking"
CUDA_PROBE = "torch.cuda.is_available"
CUDA_PROBE_ALLOWED = {
    "pipeline/core/placement.py": "the one place that asks",
    "pipeline/training/checkpoint.py": "saves and restores the CUDA RNG state when CUDA exists",
}


def python_files(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Path]:
    return sorted(p for package in packages for p in (root / package).rglob("*.py"))


def rel(path: Path, root: Path = ROOT) -> str:
    return path.relative_to(root).as_posix()


def local_imports(path: Path) -> list[int]:
    """Line numbers of imports inside functions, each import once (also in nested functions)."""
    found: dict[int, int] = {}  # id(import node) -> line
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    found[id(sub)] = sub.lineno
    return sorted(found.values())


def unlisted_local_imports(root: Path = ROOT) -> list[str]:
    return [
        f"{rel(path, root)}:{line}"
        for path in python_files(root)
        if rel(path, root) not in LAZY_IMPORTS
        for line in local_imports(path)
    ]


def readme_lazy_modules(readme: str) -> set[str]:
    """The modules in the first column of the README's "Imports at the top" table."""
    section = readme.split("**Imports at the top.**", 1)[1].split("\n\n", 2)[1]
    return set(re.findall(r"^\| `([^`]+\.py)` \|", section, re.MULTILINE))


def mlflow_importers(root: Path = ROOT) -> list[str]:
    """Modules outside the tracking package that import mlflow (anywhere in the file)."""
    found = []
    for path in python_files(root):
        if rel(path, root).startswith(MLFLOW_DOOR + "/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "mlflow" for name in names):
                found.append(rel(path, root))
                break
    return found


def constants_defined_twice(root: Path = ROOT) -> dict[str, list[str]]:
    """UPPER_CASE module-level names assigned in more than one module."""
    where: dict[str, set[str]] = {}
    for path in python_files(root):
        for node in ast.parse(path.read_text()).body:
            targets = (
                node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            )
            for target in targets:
                if isinstance(target, ast.Name) and target.id.lstrip("_").isupper():
                    where.setdefault(target.id, set()).add(rel(path, root))
    return {name: sorted(files) for name, files in where.items() if len(files) > 1}


def files_containing(
    text: str, root: Path = ROOT, packages: tuple[str, ...] = PACKAGES
) -> set[str]:
    return {rel(path, root) for path in python_files(root, packages) if text in path.read_text()}


def test_function_local_imports_only_where_listed():
    assert unlisted_local_imports() == [], "import at the top, or list the module and why"
    stale = [m for m in LAZY_IMPORTS if not local_imports(ROOT / m)]
    assert stale == [], "listed in LAZY_IMPORTS without a function-local import"


def test_the_readme_lists_exactly_the_lazy_imports():
    assert readme_lazy_modules((ROOT / "README.md").read_text()) == set(LAZY_IMPORTS)


def test_only_the_tracking_package_imports_mlflow():
    assert mlflow_importers() == []


def test_only_placement_asks_torch_about_the_device():
    assert files_containing(CUDA_PROBE, packages=(*PACKAGES, "benchmarks")) <= set(
        CUDA_PROBE_ALLOWED
    )
    assert files_containing("parameters()).device") == set()  # the placement is passed down


def test_each_constant_is_defined_once():
    assert constants_defined_twice() == {}


def test_one_vocabulary_one_sort_one_stage_entry():
    assert files_containing('"fp32", "bf16"') == set()  # Precision, in placement.py
    assert files_containing('"cpu", "cuda"') == set()  # Device, in placement.py
    assert files_containing(r're.split(r"(\d+)"') == {"pipeline/core/ordering.py"}
    assert files_containing("require=") == {"pipeline/core/stage.py"}
    assert files_containing("CoconetError, FileNotFoundError") == {"pipeline/core/errors.py"}
    assert files_containing("except EXPECTED_ERRORS") == {  # the stage entry, the CLI's last
        "pipeline/core/stage.py",
        "pipeline/cli/__init__.py",
    }


def test_planted_violations_are_caught(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    planted = (
        "import mlflow\nX = 1\n\n\ndef f():\n    import os\n\n    def g():\n        import sys\n\n"
        "    return torch.cuda.is_available\n"
    )
    (tmp_path / "pipeline" / "a.py").write_text(planted)
    (tmp_path / "flows" / "b.py").write_text("X = 2\n")
    assert unlisted_local_imports(tmp_path) == ["pipeline/a.py:6", "pipeline/a.py:9"]  # each once
    assert mlflow_importers(tmp_path) == ["pipeline/a.py"]
    assert constants_defined_twice(tmp_path) == {"X": ["flows/b.py", "pipeline/a.py"]}
    assert files_containing(CUDA_PROBE, tmp_path) == {"pipeline/a.py"}
