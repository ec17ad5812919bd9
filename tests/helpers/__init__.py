"""Helpers the tests share: a shrunk project copy, MLflow runs to register, patch files."""
