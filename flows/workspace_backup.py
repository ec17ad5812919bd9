"""Undoing a failed pipeline run: DVC deletes a stage's outputs before running it, so a failure
leaves them missing until the workspace is put back to the last ``dvc.lock``."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows.dvc_runner import run_dvc, uncached_outs
from pipeline.core.atomic import write_json


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _copy(src: Path, dst: Path) -> None:
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst)


@dataclass
class WorkspaceBackup:
    """``dvc.lock`` and the uncached stage outputs, saved before a pipeline run (in
    ``.dvc/tmp``) so that a failed run can be undone: :meth:`restore` puts them back and runs
    ``dvc checkout --force``, which brings every cached output back to the restored lock. The
    folder describes itself (``backup.json``), so a later process can :meth:`load` and restore it
    when the run that saved it was killed."""

    root: Path
    folder: Path
    lock: str | None
    outs: dict[Path, bool]  # uncached output -> existed before the run

    @classmethod
    def save(cls, root: Path) -> WorkspaceBackup:
        """Copy ``dvc.lock`` and the uncached outputs aside."""
        tmp = root / ".dvc" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="retrain-backup-", dir=tmp))
        lock = root / "dvc.lock"
        outs: dict[Path, bool] = {}
        try:
            for out in uncached_outs(root):
                outs[out] = out.exists()
                if not outs[out]:
                    continue
                copy = folder / out.relative_to(root)
                copy.parent.mkdir(parents=True, exist_ok=True)
                _copy(out, copy)
            backup = cls(root, folder, lock.read_text() if lock.is_file() else None, outs)
            described = {
                "lock": backup.lock,
                "outs": {out.relative_to(root).as_posix(): had for out, had in outs.items()},
            }
            write_json(folder / "backup.json", described)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return backup

    @classmethod
    def load(cls, root: Path, folder: Path) -> WorkspaceBackup:
        """The backup :meth:`save` left in ``folder`` (by a run that did not finish)."""
        described = json.loads((folder / "backup.json").read_text())
        outs = {root / rel: bool(had) for rel, had in described["outs"].items()}
        return cls(root, folder, described["lock"], outs)

    def restore(self, log: Callable[[str], None] | None = None) -> None:
        """Put ``dvc.lock`` and the uncached outputs back, then ``dvc checkout --force``. The
        copies are copied, not moved, and deleted last: a restore cut short can run again."""
        lock = self.root / "dvc.lock"
        if self.lock is None:
            lock.unlink(missing_ok=True)
        else:
            lock.write_text(self.lock)
        for out, existed in self.outs.items():
            _remove(out)
            if existed:
                out.parent.mkdir(parents=True, exist_ok=True)
                _copy(self.folder / out.relative_to(self.root), out)
        run_dvc(["checkout", "--force"], self.root, log=log)
        self.discard()

    def discard(self) -> None:
        """Delete the saved copies."""
        shutil.rmtree(self.folder, ignore_errors=True)
