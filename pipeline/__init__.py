"""The DVC stages of the coconet pipeline (one module each) and the code they share."""
