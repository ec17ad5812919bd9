"""CoCoNet network and losses (code only; weights live in MLflow and DVC)."""
