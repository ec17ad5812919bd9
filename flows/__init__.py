"""Prefect flows orchestrating the DVC pipeline."""
