"""The training loop, its checkpoints, data-parallel setup and run tracking."""
