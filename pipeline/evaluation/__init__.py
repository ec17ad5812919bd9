"""Evaluation: classical baselines, scoring image files, the ranking report and gallery."""
