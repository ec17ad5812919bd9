"""The test-image guard: no test scene is ever trained on, so an inbox image that is a
near-duplicate of a test image (an edited copy: re-encoded, cropped, shifted, resized, brightness,
contrast or gamma changed, noise, blur; inverted, as black-hot and white-hot infrared are; flipped
or turned by 90 degrees, as training augments) is refused. See ``flows/README.md`` for the
measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flows.inbox.validation import IMAGE_ROLES, InboxError, InboxPair
from pipeline.catalogue.index import read_index
from pipeline.core.imageio import ImageError, read_image, to_grey
from pipeline.core.paths import ProjectPaths

# Near-duplicates of test images: both images in grey, the test image scaled to GRID px on its
# longer side, both band-passed (difference of Gaussians, BAND sigmas in grid px: brightness,
# contrast, re-encoding and noise drop out, scene structure stays). The inbox image is scaled so
# that it spans each fraction in COVERAGE of the test image's width (a crop of up to 20%) and
# slid over it; the score is the highest normalised cross-correlation. Measured on the mirrored
# data (flows/README.md): edited copies of the 42 TNO test images (JPEG q30, crops of 2-10%,
# shifts, brightness +-30, gamma, half/1.5x size, noise, blur) score >= 0.91; other TNO scenes
# (incl. the same building seen from elsewhere) <= 0.67, RoadScene <= 0.62; other frames of a
# test scene from the same viewpoint score 0.84-0.89 and are refused too.
NEAR_DUPLICATE_NCC = 0.80
GRID = 128
BAND = (2.0, 8.0)
COVERAGE = tuple(round(1.0 - 0.02 * i, 2) for i in range(11))  # 1.00 ... 0.80
HEIGHT_RANGE = (0.75, 1.05)  # template height / test height that can still be a crop of it


@dataclass(frozen=True)
class HeldOutImage:
    """One image of the test split, prepared for :func:`match_score`."""

    pair_id: str
    role: str
    path: Path
    grid: np.ndarray  # band-passed grey image, GRID px on its longer side


def _grid(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (grey float) resized to ``width`` x ``height`` and band-passed."""
    h, w = image.shape
    shrink = width < w
    resized = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    return cv2.GaussianBlur(resized, (0, 0), BAND[0]) - cv2.GaussianBlur(resized, (0, 0), BAND[1])


def read_grey(path: Path) -> np.ndarray:
    """An image file as the matcher reads it: grey, float32, contiguous."""
    return np.ascontiguousarray(to_grey(read_image(path)), dtype=np.float32)


def reference_grid(image: np.ndarray) -> np.ndarray:
    """A test image (grey float) as :func:`match_score` compares against it."""
    h, w = image.shape
    scale = GRID / max(h, w)
    return _grid(image, max(1, round(w * scale)), max(1, round(h * scale)))


def orientations(image: np.ndarray) -> list[np.ndarray]:
    """The eight flips and quarter turns of an image (the dihedral group of the square)."""
    turns = [np.rot90(image, k) for k in range(4)]
    return [np.ascontiguousarray(t) for t in turns + [np.fliplr(t) for t in turns]]


def match_score(image: np.ndarray, reference: np.ndarray, cache: dict | None = None) -> float:
    """How well ``image`` (grey float, any size, as it is oriented) matches a
    :func:`reference_grid`: the highest absolute normalised cross-correlation of the band-passed
    images over the scales in COVERAGE and every translation (1.0: the same picture or its
    negative; unrelated images stay well below 0.7).

    ``cache`` (a dict) keeps the scaled ``image`` between calls with references of one size.
    """
    cache = {} if cache is None else cache
    ref_h, ref_w = reference.shape
    h, w = image.shape
    best = -1.0
    for cover in COVERAGE:
        scale = cover * ref_w / w
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if not HEIGHT_RANGE[0] * ref_h <= size[1] <= HEIGHT_RANGE[1] * ref_h:
            continue
        if size not in cache:
            cache[size] = _grid(image, *size)
        template = cache[size]
        if template.shape[0] > ref_h:  # a little taller: compare its middle rows
            top = (template.shape[0] - ref_h) // 2
            template = template[top : top + ref_h]
        if float(template.std()) < 1e-6:  # no structure to compare
            continue
        scores = cv2.matchTemplate(reference, template, cv2.TM_CCOEFF_NORMED)
        best = max(best, float(np.nanmax(np.abs(scores))))  # an inverted copy correlates -1
    return min(best, 1.0)


def load_held_out(root: Path) -> list[HeldOutImage]:
    """The test split's images from ``data/raw/index.csv`` (split == test), ready to match.

    Raises :class:`InboxError` naming the file when the index or an image cannot be read.
    """
    paths = ProjectPaths(root)
    index = paths.index
    if not index.is_file():
        raise InboxError(
            f"{index} is missing (run `dvc checkout data/raw` or `dvc repro download`)"
        )
    rows = [r for r in read_index(index) if r.get("split") == "test"]
    held_out = []
    for row in rows:
        for role in IMAGE_ROLES:
            path = root / row[role]
            try:
                grid = reference_grid(read_grey(path))
            except (ImageError, OSError) as exc:
                raise InboxError(f"{path}: test image listed in {index} unreadable: {exc}") from exc
            held_out.append(HeldOutImage(row["pair_id"], role, path, grid))
    return held_out


def nearest_held_out(
    pair: InboxPair, held_out: list[HeldOutImage]
) -> tuple[float, str, HeldOutImage] | None:
    """(score, inbox role, test image) of the closest test image to any ir/vis image of
    ``pair`` in any of its eight orientations."""
    best = None
    for role in IMAGE_ROLES:
        for image in orientations(read_grey(pair.files[role])):
            cache: dict = {}
            for test in held_out:
                score = match_score(image, test.grid, cache)
                if best is None or score > best[0]:
                    best = (score, role, test)
    return best
