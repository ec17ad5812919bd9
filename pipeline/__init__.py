"""The coconet pipeline: DVC stages (``stages/``) and the packages they share."""
