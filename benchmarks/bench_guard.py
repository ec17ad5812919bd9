"""The inbox guard's margins on the mirrored data: how close images of *other* scenes come to
the test images, in any of the eight orientations the guard tries (its false-positive risk),
and which images of other pairs it refuses.

Reads the catalogued files straight from the mirror (``COCONET_MIRROR`` or ``../shared/mirror``);
the test images are the tno40 pairs whose catalogue split is ``test``. Prints, per group of
other images, how many comparisons and the highest-scoring images with their verdicts.
(Edited copies of test images, the true positives, are pinned by
``tests/flows/inbox/test_guard.py``.)

    python benchmarks/bench_guard.py [--roadscene-pairs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from flows.inbox.guard import (  # noqa: E402
    NEAR_DUPLICATE_NCC,
    _grey,
    match_score,
    orientations,
    reference_grid,
)
from pipeline.catalogue import load_dataset  # noqa: E402
from pipeline.core.params import PROJECT_ROOT  # noqa: E402

ROLES = ("ir", "vis")


def _mirror() -> Path:
    path = Path(os.environ.get("COCONET_MIRROR") or PROJECT_ROOT.parent / "shared" / "mirror")
    if not path.is_dir():
        raise SystemExit(f"no mirror at {path}: set COCONET_MIRROR")
    return path


def _images(mirror: Path, dataset: str, keep, limit: int | None = None) -> dict[str, Path]:
    data = load_dataset(dataset)
    out = {}
    for pair, files in list(data.pairs().items())[:limit]:
        if keep(data.split_of(pair), pair):
            out |= {f"{dataset}/{pair} {r}": mirror / files[r].key for r in ROLES if r in files}
    return out


def _group(name: str, images: dict[str, Path], tests: dict[str, object], top: int = 3) -> None:
    """Score every image of a group (8 orientations) against every test image of another pair;
    print the ``top`` highest, one per image."""
    tic, best, count = time.perf_counter(), {}, 0
    for label, path in images.items():
        for image in orientations(_grey(path)):
            cache: dict = {}
            for test_label, grid in tests.items():
                if test_label.split()[0] == label.split()[0]:
                    continue  # an image against its own pair
                score = match_score(image, grid, cache)
                count += 1
                if score > best.get(label, (-1.0, ""))[0]:
                    best[label] = (score, test_label)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:top]
    print(f"{name}: {count} comparisons, {time.perf_counter() - tic:.0f} s")
    for label, (score, test_label) in ranked:
        verdict = "REFUSED" if score >= NEAR_DUPLICATE_NCC else "accepted"
        print(f"  {score:.3f} {label} vs test {test_label} ({verdict}, "
              f"margin {score - NEAR_DUPLICATE_NCC:+.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roadscene-pairs", type=int, default=None, help="default: all 221")
    args = parser.parse_args()
    mirror = _mirror()
    test_paths = _images(mirror, "tno40", lambda split, _: split == "test")
    tests = {label: reference_grid(_grey(path)) for label, path in test_paths.items()}
    print(f"{len(tests)} test images; 8 orientations of each other image; "
          f"threshold {NEAR_DUPLICATE_NCC}")  # fmt: skip
    _group("TNO-40 test images vs the other test pairs", test_paths, tests)
    _group("TNO-40 pairs outside the test split", _images(
        mirror, "tno40", lambda split, _: split != "test"), tests)  # fmt: skip
    _group("TNO masked pairs (training)", _images(mirror, "tno_masked", lambda *_: True), tests)
    _group("RoadScene", _images(
        mirror, "roadscene", lambda *_: True, args.roadscene_pairs), tests)  # fmt: skip


if __name__ == "__main__":
    main()
