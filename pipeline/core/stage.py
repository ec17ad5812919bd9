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
from pipeline.core.params import PARAMS_FILE, PROJECT_ROOT, Params, load_params
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
    (``{"force_cpu": ...}`` becomes ``--force-cpu``).
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
        return run(load_params(args.params), ProjectPaths(args.root.resolve()), **extra)
    except (CoconetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
