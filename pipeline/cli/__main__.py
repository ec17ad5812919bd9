"""``python -m pipeline.cli``: the ``coconet`` command."""

from pipeline.cli import console_script

console_script()
