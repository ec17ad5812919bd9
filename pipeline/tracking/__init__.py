"""Tracking and provenance: the MLflow experiment, dvc.lock hashes, lineage audits."""
