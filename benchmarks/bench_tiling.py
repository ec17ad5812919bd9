"""Tiled vs untiled CoCoNet inference on the CPU: peak memory and milliseconds per megapixel.

Each case runs in its own (spawned) process with the same seeded random weights; peak memory is
the growth of the resident set's high-water mark over the call (reset through
/proc/self/clear_refs where allowed, else the ``getrusage`` maxrss delta), the model and inputs
already in memory. Default cases: 1280x1024 untiled and tiled (``--tile``), and 4000x3000 tiled
with the tile ``plan_tiles`` picks for ``--budget-gb`` (3 GB).

``--fit`` instead measures untiled forward passes at several sizes, in fp32 and under bf16
autocast, and fits peak bytes = a * pixels + b: the constants of ``models.tiling``'s memory model.

    python benchmarks/bench_tiling.py [--threads 2] [--tile 512] [--budget-gb 3]
        [--precision fp32|bf16]
    python benchmarks/bench_tiling.py --fit [--sizes 192,320,448,576]

``benchmarks/bench_inference.py`` runs the same cases and targets after its own (``--no-large``
skips them).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
import torch

# This checkout's packages, not an installed copy (spawned workers import this module too).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.peak_memory import rss_high_water_kib  # noqa: E402


def _measure(
    width: int, height: int, tile: int | None, precision: str, threads: int, keep_output: bool
) -> dict:
    """In a fresh process: seconds and peak RSS growth (bytes) of one fusion."""
    from models.coconet import CoCoNet
    from models.tiling import fuse_tiled
    from pipeline.core.placement import Placement, Precision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random").eval().to(memory_format=torch.channels_last)
    vis, ir = (torch.rand(1, 1, height, width) * 2 - 1 for _ in range(2))
    vis, ir = (t.contiguous(memory_format=torch.channels_last) for t in (vis, ir))
    base = rss_high_water_kib(reset=True)
    tic = time.perf_counter()
    cpu = torch.device("cpu")
    with Placement(cpu, Precision(precision)).autocast(), torch.inference_mode():
        out = model(vis, ir) if tile is None else fuse_tiled(model, vis, ir, tile, cpu)
    seconds = time.perf_counter() - tic
    peak = (rss_high_water_kib() - base) * 1024
    result = {"seconds": seconds, "peak": peak, "shape": tuple(out.shape)}
    if keep_output:
        result["grey"] = torch.round(out.float().add(1).div(2).clamp(0, 1) * 255)[0, 0].numpy()
        result["output"] = out.float()[0, 0].numpy()
    return result


def _run(*job) -> dict:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure, job)


def _fit(sizes: list[int], threads: int) -> None:
    print(f"untiled forward peak RSS growth, {threads} threads")
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        pixels, peaks = [], []
        for side in sizes:
            result = _run(side, side, None, precision, threads, False)
            pixels.append(side * side)
            peaks.append(result["peak"])
            print(f"  {precision} {side}x{side}: {result['peak'] / 2**20:8.1f} MiB, "
                  f"{result['seconds']:6.2f} s")  # fmt: skip
        slope, intercept = np.polyfit(pixels, peaks, 1)
        print(f"{dtype}: {slope:.0f} bytes/pixel + {intercept / 2**20:.1f} MiB")


MAX_PEAK_GB = 3.0  # target: a 4000x3000 pair within this peak
MAX_TIME_RATIO = 1.0  # target: tiled 4000x3000 per pixel no slower than untiled 1280x1024


def large_image_report(budget_gb: float, precision: str, threads: int, tile: int = 512) -> dict:
    """Run the three cases, print them and the targets; returns {case: (ms per MP, peak)}."""
    from models.tiling import estimate_bytes, plan_tiles, tile_count

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    budget = int(budget_gb * 2**30)
    big_tile = plan_tiles(3000, 4000, budget, dtype)
    cases = [
        ("1280x1024 untiled", 1280, 1024, None),
        (f"1280x1024 tiled {tile}", 1280, 1024, tile),
        (f"4000x3000 tiled {big_tile}", 4000, 3000, big_tile),
    ]
    print(f"large images: CoCoNet on the CPU, {precision}, {threads} threads, "
          f"torch {torch.__version__}; 4000x3000 budget {budget_gb:g} GB: "
          f"tile {big_tile}")  # fmt: skip
    print(f"{'case':<24} {'tiles':>5} {'s':>8} {'ms/MP':>9} {'peak MiB':>9} {'est. MiB':>9}")
    results, outputs, greys = {}, [], []
    for name, width, height, case_tile in cases:
        result = _run(width, height, case_tile, precision, threads, width == 1280)
        assert result["shape"] == (1, 1, height, width), result["shape"]
        megapixels = width * height / 1e6
        tiles = 1 if case_tile is None else tile_count(height, width, case_tile)
        estimate = estimate_bytes(height, width, case_tile or max(width, height), dtype)
        results[name] = (result["seconds"] * 1e3 / megapixels, result["peak"])
        outputs.append(result.get("output"))
        greys.append(result.get("grey"))
        print(f"{name:<24} {tiles:>5} {result['seconds']:>8.1f} "
              f"{result['seconds'] * 1e3 / megapixels:>9.0f} {result['peak'] / 2**20:>9.0f} "
              f"{estimate / 2**20:>9.0f}")  # fmt: skip
    apart, diff = np.abs(greys[1] - greys[0]).max(), np.abs(outputs[1] - outputs[0]).max()
    print(f"1280x1024 tiled vs untiled: max |difference| {diff:.2e} on [-1, 1], "
          f"{apart:.0f} grey levels (8-bit; target <= 1)")  # fmt: skip
    (base_ms, base_peak), (tiled_ms, tiled_peak), (big_ms, big_peak) = results.values()
    print(f"1280x1024 tiled / untiled: time per MP x{tiled_ms / base_ms:.2f}, "
          f"peak memory x{tiled_peak / base_peak:.2f}")  # fmt: skip
    peak_ok = big_peak <= MAX_PEAK_GB * 2**30
    time_ok = big_ms / base_ms <= MAX_TIME_RATIO
    print(f"target: 4000x3000 peak <= {MAX_PEAK_GB:g} GB: {big_peak / 2**30:.2f} GB "
          f"({'met' if peak_ok else 'MISSED'})")  # fmt: skip
    print(f"target: 4000x3000 tiled time per MP <= x{MAX_TIME_RATIO:g} untiled 1280x1024: "
          f"x{big_ms / base_ms:.2f} ({'met' if time_ok else 'MISSED'})")  # fmt: skip
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=512, help="tile for the 1280x1024 case")
    parser.add_argument("--budget-gb", type=float, default=3.0, help="budget for 4000x3000")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--fit", action="store_true", help="fit the memory model instead")
    parser.add_argument("--sizes", default="192,320,448,576", help="square sides for --fit")
    args = parser.parse_args()
    if args.fit:
        _fit([int(s) for s in args.sizes.split(",")], args.threads)
        return
    large_image_report(args.budget_gb, args.precision, args.threads, args.tile)


if __name__ == "__main__":
    main()
