"""``python -m pipeline.catalogue import NAME --manifest PATH``."""

from pipeline.catalogue.loader import main

main()
