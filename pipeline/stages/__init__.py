"""The DVC stages, exactly those of dvc.yaml: one module each, ``run(params, paths) -> record``."""
