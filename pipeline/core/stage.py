"""How a stage runs: :func:`run_stage` for every caller, :func:`stage_main` for
``python -m pipeline.stages.<stage>`` (what ``dvc repro`` runs).

Every stage is ``run(params, paths) -> record``. :func:`execute` reads and checks the params
file (it must hold the stage's own section), resolves the project root and calls it;
:func:`run_stage` turns an expected error into one line. The ``coconet <stage>`` commands call
it too, so both ways in behave alike.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pipeline.core.errors import EXPECTED_ERRORS
from pipeline.core.params import PARAMS_FILE, PROJECT_ROOT, SECTIONS, Params, load_params
from pipeline.core.paths import ProjectPaths

StageRun = Callable[..., Any]


def execute(
    run: StageRun,
    section: str,
    params_file: Path = PARAMS_FILE,
    root: Path | None = None,
    **options: Any,
) -> Any:
    """Load ``params_file`` (requiring ``section`` when it is a params section) and call
    ``run(params, ProjectPaths(root), **options)``; errors propagate."""
    required = (section,) if section in SECTIONS else ()
    params: Params = load_params(params_file, require=required)
    return run(params, ProjectPaths((root or PROJECT_ROOT).resolve()), **options)


def exit_with_error(message: str) -> NoReturn:
    """Print ``error: message`` on stderr and exit 1."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run_stage(
    run: StageRun,
    section: str,
    params_file: Path = PARAMS_FILE,
    root: Path | None = None,
    fail: Callable[[str], NoReturn] = exit_with_error,
    **options: Any,
) -> Any:
    """:func:`execute`; an expected error (:data:`EXPECTED_ERRORS`) goes to ``fail`` as one
    line (by default ``error: ...`` on stderr and exit 1)."""
    try:
        return execute(run, section, params_file, root, **options)
    except EXPECTED_ERRORS as exc:
        fail(str(exc))


def stage_main(run: StageRun, description: str, argv: Sequence[str] | None = None) -> Any:
    """Parse ``--params`` and ``--root``, run the stage; an expected error prints one
    ``error:`` line and exits 1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params.yaml to read")
    parser.add_argument(
        "--root", type=Path, default=PROJECT_ROOT, help="project root for data and outputs"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run_stage(run, _section_of(run), args.params, args.root)


def _section_of(run: StageRun) -> str:
    """The stage module's name (``train`` for ``pipeline.stages.train``, also when it runs as
    ``python -m``, i.e. as ``__main__``)."""
    spec = getattr(sys.modules.get(run.__module__), "__spec__", None)
    return (spec.name if spec else run.__module__).rpartition(".")[2]
