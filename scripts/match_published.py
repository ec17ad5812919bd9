"""Match published fused images to the catalogued source pairs they were made from, by content.

A published result (e.g. the CoCoNet authors' ``results/TNO_*.bmp``) carries no source name. A
fusion of pair P has P's size and is, to a close approximation, a blend of P's two sources, so
each result is compared with every same-sized pair of the candidate datasets by the R² of the
least-squares fit ``fused ~ a * ir + b * vis + c`` (grey, 0..1). A match needs an R² of at least
``--min-score`` and a margin of at least ``--min-margin`` over the next pair (another frame of
the same scene fits too, but far worse). Prints the TSV the catalogue's published entry holds
(``pipeline/catalogue/published/<name>.tsv``), keeping its ``method`` column where it already
says more (``pixel-exact``, checked by running the authors' model on the sources):

    uv run python scripts/match_published.py coconet_authors --mirror MIRROR_DIR > published.tsv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.catalogue import load_dataset
from pipeline.catalogue.published import PUBLISHED_DIR, load_published, write_published_tsv
from pipeline.core.imageio import read_image, to_grey


def score(fused: np.ndarray, ir: np.ndarray, vis: np.ndarray) -> float:
    """R² of the least-squares fit of the fused image by the two sources and a constant."""
    y = to_grey(fused).astype(np.float64).ravel()
    design = np.stack([to_grey(ir).ravel(), to_grey(vis).ravel(), np.ones(y.size)], axis=1).astype(
        np.float64
    )
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(1.0 - residual @ residual / max(float(((y - y.mean()) ** 2).sum()), 1e-12))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="published entry, pipeline/catalogue/published/NAME.yaml")
    parser.add_argument("--mirror", type=Path, required=True, help="folder laid out HOST/PATH")
    parser.add_argument("--datasets", nargs="+", default=["tno40"])
    parser.add_argument("--min-score", type=float, default=0.8)
    parser.add_argument("--min-margin", type=float, default=0.3)
    args = parser.parse_args(argv)

    def local(url_key: str) -> Path:
        return args.mirror / url_key

    published = load_published(args.name)
    candidates = []
    for name in args.datasets:
        for pair, files in load_dataset(name).pairs().items():
            ir, vis = (read_image(local(files[r].key)) for r in ("ir", "vis"))
            candidates.append((name, pair, ir, vis))
    rows = []
    for item in published.files:
        fused = read_image(local(item.key))
        scored = sorted(
            ((score(fused, ir, vis), name, pair) for name, pair, ir, vis in candidates
             if ir.shape[:2] == fused.shape[:2]),
            reverse=True,
        )  # fmt: skip
        best, runner_up = (scored + [(0.0, "", ""), (0.0, "", "")])[:2]
        matched = best[0] >= args.min_score and best[0] - runner_up[0] >= args.min_margin
        method = item.method if item.method.startswith("pixel-exact") and matched else "content"
        rows.append(
            item.matched(
                best[1] if matched else "",
                best[2] if matched else "",
                method if matched else "",
                f"{best[0]:.3f}",
                f"{runner_up[0]:.3f}",
            )
        )
        print(
            f"{item.result}: best {best[1]}/{best[2]} {best[0]:.3f}, next "
            f"{runner_up[1]}/{runner_up[2]} {runner_up[0]:.3f} -> {'match' if matched else '-'}",
            file=sys.stderr,
        )
    write_published_tsv(sys.stdout, rows)
    print(f"(entry: {PUBLISHED_DIR / published.files_name})", file=sys.stderr)


if __name__ == "__main__":
    main()
