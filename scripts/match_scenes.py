"""Find the catalogued pairs that show the same scene as each pair of a dataset.

Every pair of ``NAME`` is compared with every pair of the ``--against`` datasets by the
test-image guard's near-duplicate score (``flows/inbox/guard.py``: band-passed normalised
cross-correlation over crops, scales and the eight flips and turns; the same picture scores
1.0, other frames of a scene from one viewpoint 0.84-0.89, other TNO scenes at most 0.67). A
pair's score against another is the higher of its infrared and visible scores (as the guard
refuses a pair when either image matches). Prints, as TSV,
each pair's nearest pair overall and its nearest test pair (split ``test`` in its catalogue),
with their scores, the table a catalogue entry's split rules are checked against (e.g.
``pipeline/catalogue/tno_authors_scenes.tsv``)::

    uv run python scripts/match_scenes.py tno_authors --against tno40 tno_masked \\
        --mirror MIRROR_DIR > pipeline/catalogue/tno_authors_scenes.tsv
"""

from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from flows.inbox.guard import match_score, read_grey, reference_grid
from pipeline.catalogue import load_dataset
from pipeline.catalogue.fetch import cache_dir, fetch_all, file_requests

COLUMNS = ("pair", "nearest", "score", "nearest_test", "test_score")


def _pairs(name: str, mirror: str) -> list[tuple[str, bool, dict[str, np.ndarray]]]:
    """(pair id, is a test pair, grey ir and vis) of every pair of catalogue dataset ``name``,
    read sha256-checked through the mirror and the download cache."""
    dataset = load_dataset(name)
    cached = fetch_all(file_requests(dataset.files), cache_dir(), mirror, desc=name)
    return [
        (
            f"{name}/{pair}",
            dataset.split_of(pair) == "test",
            {r: read_grey(cached[files[r].key]) for r in ("ir", "vis")},
        )
        for pair, files in dataset.pairs().items()
    ]


def pair_score(
    images: dict[str, np.ndarray], grids: dict[str, np.ndarray], caches: dict[str, dict]
) -> float:
    """How closely a pair matches another (its :func:`reference_grid` per role): the higher of
    the infrared and visible scores. ``caches`` (one dict per role) keeps each image's scaled
    copies between references of one size."""
    return max(match_score(images[r], grids[r], caches[r]) for r in ("ir", "vis"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="catalogue dataset whose pairs are matched")
    parser.add_argument("--against", nargs="+", required=True, help="catalogue datasets")
    parser.add_argument("--mirror", required=True, help="mirror folder or base URL")
    args = parser.parse_args(argv)
    references = [
        (pair_id, test, {r: reference_grid(img) for r, img in images.items()})
        for name in args.against
        for pair_id, test, images in _pairs(name, args.mirror)
    ]
    writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    writer.writerow(COLUMNS)
    for pair_id, _, images in _pairs(args.name, args.mirror):
        caches: dict[str, dict] = {role: {} for role in images}
        scored = sorted(
            ((pair_score(images, grids, caches), ref, test) for ref, test, grids in references),
            reverse=True,
        )
        best = scored[0]
        best_test = next((s for s in scored if s[2]), (0.0, "", True))
        pair = pair_id.split("/", 1)[1]
        writer.writerow([pair, best[1], f"{best[0]:.2f}", best_test[1], f"{best_test[0]:.2f}"])


if __name__ == "__main__":
    main()
