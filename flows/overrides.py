"""``coconet run -S key=value``: params.yaml composed from ``conf/`` exactly as ``dvc exp run -S``
composes it (DVC's own Hydra composition, ``hydra.enabled`` in ``.dvc/config``), validated.

Like ``dvc exp run``, the composition replaces ``params.yaml`` whole: ``-S schedule=cpu`` picks a
schedule, ``-S train.lr=0.001`` sets a value on top; an edit made to ``params.yaml`` by hand and
not to ``conf/`` is not kept. The file is put back as it was if the result does not validate.
"""

from __future__ import annotations

import os
from pathlib import Path

from dvc.dependency.param import ParamsDependency
from dvc.repo import Repo
from dvc.utils.cli_parse import to_path_overrides
from dvc.utils.hydra import apply_overrides, compose_and_dump
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.core.params import ParamsError, load_params

COMPOSED_FILE = ParamsDependency.DEFAULT_PARAMS_FILE  # params.yaml, the file Hydra writes


def compose_params(root: Path, overrides: list[str]) -> dict[str, str]:
    """Write ``root/params.yaml`` composed from ``conf/`` and ``overrides`` (Hydra override
    syntax, as ``dvc exp run -S``); returns ``{key: value}`` as given. Raises
    :class:`ParamsError` (nothing changed) for an override Hydra or the schema refuses."""
    target = root / COMPOSED_FILE
    before = target.read_text() if target.is_file() else None
    by_file = to_path_overrides(overrides)
    by_file.setdefault(COMPOSED_FILE, [])  # dvc exp run always recomposes params.yaml
    try:
        with Repo(str(root)) as repo:
            hydra = repo.config.get("hydra", {})
            for path, values in by_file.items():
                if hydra.get("enabled", False) and path == COMPOSED_FILE:
                    module = hydra.get("config_module")
                    folder = None if module else os.path.join(root, hydra.get("config_dir", "conf"))
                    plugins = os.path.join(root, hydra.get("plugins_path", ""))
                    name = hydra.get("config_name", "config")
                    compose_and_dump(str(target), folder, module, name, plugins, values)
                else:
                    apply_overrides(str(root / path), values)
        load_params(target)
    except (HydraException, OmegaConfBaseException, ParamsError, ValueError) as exc:
        if before is None:
            target.unlink(missing_ok=True)
        else:
            target.write_text(before)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ParamsError(f"-S {' -S '.join(overrides)}: {reason}") from exc
    return dict(o.split("=", 1) if "=" in o else (o, "") for o in overrides)
