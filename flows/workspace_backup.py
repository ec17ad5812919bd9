"""Undoing a failed pipeline run: DVC deletes a stage's outputs before running it, so a failure
leaves them missing until the workspace is put back to the last ``dvc.lock``."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flows.dvc_runner import run_dvc, uncached_outs


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@dataclass
class WorkspaceBackup:
    """``dvc.lock`` and the uncached stage outputs, saved before a pipeline run (in
    ``.dvc/tmp``) so that a failed run can be undone: :meth:`restore` puts them back and runs
    ``dvc checkout --force``, which brings every cached output back to the restored lock."""

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
                if out.is_dir():
                    shutil.copytree(out, copy, symlinks=True)
                else:
                    shutil.copy2(out, copy)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cls(root, folder, lock.read_text() if lock.is_file() else None, outs)

    def restore(self, log: Callable[[str], None] | None = None) -> None:
        """Put ``dvc.lock`` and the uncached outputs back, then ``dvc checkout --force``."""
        lock = self.root / "dvc.lock"
        if self.lock is None:
            lock.unlink(missing_ok=True)
        else:
            lock.write_text(self.lock)
        for out, existed in self.outs.items():
            _remove(out)
            if existed:
                out.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.folder / out.relative_to(self.root), out)
        run_dvc(["checkout", "--force"], self.root, log=log)
        self.discard()

    def discard(self) -> None:
        """Delete the saved copies."""
        shutil.rmtree(self.folder, ignore_errors=True)
