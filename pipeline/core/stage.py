"""The one entry point of every stage module: ``python -m pipeline.stages.<stage>``.

Every stage is ``run(params, paths) -> record``; :func:`stage_main` parses ``--params`` and
``--root``, runs it, and turns an expected failure into one ``error:`` line and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import CoconetError
from pipeline.core.params import PARAMS_FILE, PROJECT_ROOT, SECTIONS, Params, load_params
from pipeline.core.paths import ProjectPaths

StageRun = Callable[[Params, ProjectPaths], Any]


def stage_main(
    run: StageRun,
    description: str,
    argv: Sequence[str] | None = None,
    switches: dict[str, str] | None = None,
) -> Any:
    """Parse the stage's arguments, run it, exit 1 with one line on an expected error.

    ``switches`` maps extra on/off keyword arguments of ``run`` to their help text
    (``{"force_cpu": ...}`` becomes ``--force-cpu``). The params file must hold the stage's
    own section (``pipeline.stages.train`` reads ``train``).
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", type=Path, default=PARAMS_FILE, help="params.yaml to read")
    parser.add_argument(
        "--root", type=Path, default=PROJECT_ROOT, help="project root for data and outputs"
    )
    for name, text in (switches or {}).items():
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, action="store_true", help=text
        )
    args = parser.parse_args(argv)
    extra = {name: getattr(args, name) for name in switches or {}}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        params = load_params(args.params, require=_own_section(run))
        return run(params, ProjectPaths(args.root.resolve()), **extra)
    except (CoconetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def _own_section(run: StageRun) -> tuple[str, ...]:
    """The params section named like the stage module defining ``run`` (also when it runs as
    ``python -m``, i.e. as ``__main__``); none for a function defined elsewhere."""
    spec = getattr(sys.modules.get(run.__module__), "__spec__", None)
    name = (spec.name if spec else run.__module__).rpartition(".")[2]
    return (name,) if name in SECTIONS else ()
