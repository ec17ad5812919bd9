"""Time the full fusion-metric suite on one 640x480 triple, single-threaded, both conventions.

    uv run python benchmarks/bench_metrics.py [--runs 9] [--ir A --vis B --fused F]

Without images it uses a deterministic synthetic triple (smooth scene + edges + noise).
Prints the median wall and CPU (process) time of ``compute_metrics`` per convention and a
per-metric breakdown; on a shared, loaded machine the CPU time is the steadier figure.
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
from pipeline.core.imageio import read_image  # noqa: E402

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


def median_times(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` over ``runs`` calls after one warm-up call."""
    fn()  # warm-up: lazy imports, caches
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


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
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    for convention in M.CONVENTIONS:
        wall, cpu = median_times(
            lambda c=convention: M.compute_metrics(ir, vis, fused, c), args.runs
        )
        print(
            f"compute_metrics(convention={convention!r}): "
            f"wall {wall * 1000:.1f} ms, cpu {cpu * 1000:.1f} ms"
        )

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
    print(f"per metric: {'wall ms':>8} {'cpu ms':>8}")
    for name, fn in parts.items():
        wall, cpu = median_times(fn, args.runs)
        print(f"  {name:<24} {wall * 1000:8.2f} {cpu * 1000:8.2f}")


if __name__ == "__main__":
    main()
