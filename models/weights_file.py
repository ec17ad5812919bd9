"""Reading a PyTorch weights file safely: tensors only, and no more memory than the file holds.

``torch.load(weights_only=True)`` never runs code from the file, and it refuses a storage whose
declared size differs from its record in the zip. What it does not refuse is a record that is
compressed: a few MB of deflated zeros can declare gigabytes, all allocated before any check.
``torch.save`` never compresses, so :func:`load_weights_file` refuses compressed records (and
the legacy pre-zip format, whose sizes cannot be checked before reading) before loading.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from models.errors import CoconetError


class WeightsFileError(CoconetError, ValueError):
    """A weights file that is not a plain ``torch.save`` zip of tensors."""


def check_weights_file(path: Path) -> None:
    """Refuse what ``torch.save`` never writes: a non-zip file or compressed records."""
    if not path.is_file():
        raise WeightsFileError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise WeightsFileError(
            f"{path}: not a PyTorch zip checkpoint (the legacy pre-1.6 format is refused: its "
            "sizes cannot be checked before reading; re-save it with a current torch.save)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WeightsFileError(f"{path}: not a readable zip ({exc})") from exc
    compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if compressed:
        declared = sum(m.file_size for m in members)
        raise WeightsFileError(
            f"{path}: {len(compressed)} compressed record(s) (e.g. {compressed[0]}) declaring "
            f"{declared / 1e6:.0f} MB in a {path.stat().st_size / 1e6:.1f} MB file; torch.save "
            "never compresses, so the file is refused before anything is allocated"
        )


def load_weights_file(path: str | Path) -> Any:
    """The content of a ``torch.save`` file, checked, loaded with ``weights_only=True`` on the
    CPU; a bad file is a :class:`WeightsFileError` naming it."""
    path = Path(path)
    check_weights_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a bad file
        detail = " ".join(str(exc).split())[:300]
        raise WeightsFileError(f"{path}: not a readable PyTorch checkpoint ({detail})") from exc
