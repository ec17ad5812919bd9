"""The dataset and weights catalogue: the loader (``loader.py``) and its data files.

``datasets/<name>.yaml`` + ``<name>.tsv`` describe one dataset file by file; ``weights.yaml``
lists the pretrained weights. See ``README.md`` beside this file.
"""

from pipeline.catalogue.loader import (
    ROLES,
    TSV_COLUMNS,
    CatalogueError,
    CatalogueFile,
    Dataset,
    Weight,
    available_datasets,
    load_dataset,
    load_weights,
    natural_key,
    read_files_tsv,
    url_key,
    write_files_tsv,
)

__all__ = [
    "ROLES",
    "TSV_COLUMNS",
    "CatalogueError",
    "CatalogueFile",
    "Dataset",
    "Weight",
    "available_datasets",
    "load_dataset",
    "load_weights",
    "natural_key",
    "read_files_tsv",
    "url_key",
    "write_files_tsv",
]
