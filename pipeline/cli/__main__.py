"""``python -m pipeline.cli``: the ``coconet`` command."""

from pipeline.cli import main

main()
