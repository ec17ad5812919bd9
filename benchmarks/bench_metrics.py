"""Time the full fusion-metric suite on one 640x480 triple, single-threaded, both conventions.

    uv run python benchmarks/bench_metrics.py [--runs 9] [--ir A --vis B --fused F]

Without images it uses a deterministic synthetic triple (smooth scene + edges + noise).
Prints the median wall time of ``compute_metrics`` per convention and a per-metric breakdown.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

from pipeline import metrics as M  # noqa: E402
from pipeline.imageio import read_image  # noqa: E402

HEIGHT, WIDTH = 480, 640


def synthetic_triple(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Infrared-like blobs, visible-like texture and edges, their average as the fused image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / max(HEIGHT, WIDTH)
    ir = 0.3 + 0.5 * np.exp(-((xx - 0.4) ** 2 + (yy - 0.35) ** 2) / 0.01)
    ir += cv2.GaussianBlur(rng.random((HEIGHT, WIDTH)), (0, 0), 3) * 0.2
    vis = 0.5 + 0.25 * np.sin(40 * xx) * np.cos(25 * yy) + 0.2 * (xx > 0.6)
    vis += rng.normal(0, 0.02, (HEIGHT, WIDTH))
    ir, vis = np.clip(ir, 0, 1).astype(np.float32), np.clip(vis, 0, 1).astype(np.float32)
    return ir, vis, (ir + vis) / 2


def median_time(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up: lazy imports, caches
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--ir")
    parser.add_argument("--vis")
    parser.add_argument("--fused")
    args = parser.parse_args()
    if args.ir and args.vis and args.fused:
        ir, vis, fused = (read_image(p) for p in (args.ir, args.vis, args.fused))
        source = f"files {args.ir}, {args.vis}, {args.fused}"
    else:
        ir, vis, fused = synthetic_triple()
        source = "synthetic triple"
    print(f"{source}: {fused.shape[1]}x{fused.shape[0]}, 1 thread, median of {args.runs} runs")

    for convention in M.CONVENTIONS:
        t = median_time(lambda c=convention: M.compute_metrics(ir, vis, fused, c), args.runs)
        print(f"compute_metrics(convention={convention!r}): {t * 1000:.1f} ms")

    a8, b8, f8 = (M.prepare_image(x) for x in (ir, vis, fused))
    a, b, f = (x.astype(np.float64) for x in (a8, b8, f8))
    parts: dict[str, Callable[[], object]] = {
        "prepare (3 images)": lambda: [M.prepare_image(x) for x in (ir, vis, fused)],
        "EN": lambda: M.entropy(f8),
        "SD": lambda: M.standard_deviation(f),
        "SF": lambda: M.spatial_frequency(f),
        "AG": lambda: M.average_gradient(f),
        "MI": lambda: M.mutual_information(a8, b8, f8),
        "SCD": lambda: M.scd(a, b, f),
        "CC": lambda: M.correlation_coefficient(a, b, f),
        "VIF": lambda: M.vif(a, b, f),
        "Qabf": lambda: M.qabf(a, b, f),
        "Nabf": lambda: M.nabf(a, b, f),
        "SSIM matlab": lambda: M.ssim(a, b, f, "matlab"),
        "SSIM cddfuse (skimage)": lambda: M.ssim(a, b, f, "cddfuse"),
        "PSNR": lambda: M.psnr(a, b, f),
    }
    print("per metric (ms):")
    for name, fn in parts.items():
        print(f"  {name:<24} {median_time(fn, args.runs) * 1000:7.2f}")


if __name__ == "__main__":
    main()
