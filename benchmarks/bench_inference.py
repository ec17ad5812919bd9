"""CoCoNet inference speed on one visible/infrared pair, on CPU and on CUDA when present.

Compares the inference path of ``coconet fuse`` (eval mode, ``torch.inference_mode``,
channels-last weights and inputs, the VGG-19 run once over both sources) with a naive baseline
(eval mode, NCHW, autograd recording as in a plain ``model(vis, ir)`` call), the same fast path
under bf16 autocast (speed ratio and the largest 8-bit difference, target at most 2 grey
levels), and the end-to-end ``pipeline.fusion.fuse_arrays`` (numpy in and out). Each
variant runs in its own process, with the same seeded random weights; the benchmark asserts
that the fp32 outputs match.
Prints the median of ``--runs`` timed runs after ``--warmup`` runs, pairs per second and peak
memory (CPU: growth of the resident set's high-water mark, reset through /proc/self/clear_refs
where possible, else the ``getrusage`` maxrss delta; CUDA: ``torch.cuda.max_memory_allocated``).

    uv run python benchmarks/bench_inference.py [--size 640x480] [--runs 5] [--warmup 1]
        [--device all|cpu|cuda] [--no-large]

Then, unless ``--no-large``, the large-image targets (``bench_tiling.large_image_report``):
a 4000x3000 pair fused in tiles within a 3 GB budget must peak at most at 3 GB, and its time per
pixel is compared with an untiled 1280x1024 pair's (target: no slower).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# This checkout's packages, not an installed copy (spawned workers import this module too).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_tiling import large_image_report  # noqa: E402
from benchmarks.peak_memory import rss_high_water_kib  # noqa: E402
from models.scaling import to_signed, to_unit  # noqa: E402
from pipeline.core.placement import cuda_available  # noqa: E402

VARIANTS = ("naive", "fast", "fast_bf16", "fuse_arrays")
BF16_MAX_GREY_LEVELS = 2  # bf16 vs fp32 fused output, 8-bit


def _inputs(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((height, width), dtype=np.float32), rng.random(
        (height, width), dtype=np.float32
    )


def _measure(variant: str, device_name: str, width: int, height: int, runs: int, warmup: int):
    """Run in a fresh process: (median seconds, peak memory bytes, output array)."""
    from models.coconet import CoCoNet
    from pipeline.core.placement import Placement, Precision
    from pipeline.fusion import fuse_arrays

    device = torch.device(device_name)
    torch.manual_seed(0)
    model = CoCoNet(vgg_weights="random").to(device).eval()
    vis_np, ir_np = _inputs(width, height)
    vis, ir = (to_signed(torch.from_numpy(a)[None, None].to(device)) for a in (vis_np, ir_np))
    if variant == "naive":
        for param in model.parameters():  # as a plain training-ready model: autograd records
            param.requires_grad_(True)

        def call():
            with torch.enable_grad():
                return model(vis, ir).detach()

    elif variant in ("fast", "fast_bf16"):
        model = model.to(memory_format=torch.channels_last)
        vis_cl, ir_cl = (t.contiguous(memory_format=torch.channels_last) for t in (vis, ir))
        placement = Placement(device, Precision.bf16 if variant == "fast_bf16" else Precision.fp32)

        def call():
            with placement.autocast(), torch.inference_mode():
                return model(vis_cl, ir_cl)

    else:
        model = model.to(memory_format=torch.channels_last)

        whole = Placement(device, Precision.fp32, 2**40)  # fp32, never tiled

        def call():
            return fuse_arrays(model, vis_np, ir_np, whole)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        call()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_high_water_kib(reset=True)
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        out = call()
        sync()
        times.append(time.perf_counter() - tic)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = (rss_high_water_kib() - base) * 1024
    if isinstance(out, torch.Tensor):
        out = to_unit(out.float()).clamp(0, 1)[0, 0].cpu().numpy()
    return statistics.median(times), peak, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="640x480", help="WxH of the pair")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    parser.add_argument(
        "--large",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also the large-image targets: a 4000x3000 pair tiled in 3 GB (CPU, a few minutes)",
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if not cuda_available():
        if args.device == "cuda":
            parser.error("no CUDA device")
        devices = [d for d in devices if d != "cuda"]
        print("no CUDA device: CPU only")
    print(f"CoCoNet inference, one {width}x{height} pair, median of {args.runs} runs "
          f"after {args.warmup} warm-up; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")  # fmt: skip
    context = mp.get_context("spawn")
    for device in devices:
        if device == "cuda":
            print(f"device: {torch.cuda.get_device_name(0)}")
        results = {}
        for variant in VARIANTS:
            with context.Pool(1) as pool:
                job = (variant, device, width, height, args.runs, args.warmup)
                results[variant] = pool.apply(_measure, job)
        print(f"{'variant':<12} {'ms/pair':>10} {'pairs/s':>9} {'peak MiB':>10}  [{device}]")
        for variant, (seconds, peak, _) in results.items():
            print(f"{variant:<12} {seconds * 1e3:>10.1f} {1 / seconds:>9.3f} {peak / 2**20:>10.1f}")
        (naive_s, naive_peak, _), (fast_s, fast_peak, _) = results["naive"], results["fast"]
        print(f"fast vs naive: {naive_s / fast_s:.2f}x faster, "
              f"peak memory {fast_peak / 2**20:.0f} vs {naive_peak / 2**20:.0f} MiB")  # fmt: skip
        reference = results["naive"][2]
        for variant in ("fast", "fuse_arrays"):
            diff = np.abs(results[variant][2] - reference).max()
            assert np.allclose(results[variant][2], reference, atol=1e-4), (variant, diff)
            print(f"outputs match: {variant} vs naive, max |diff| = {diff:.2e}")
        bf16_s, _, bf16_out = results["fast_bf16"]
        grey = np.abs(np.round(bf16_out * 255) - np.round(results["fast"][2] * 255)).max()
        verdict = "met" if grey <= BF16_MAX_GREY_LEVELS else "MISSED"
        print(f"bf16 vs fp32 (fast): {fast_s / bf16_s:.2f}x faster, outputs {grey:.0f} grey "
              f"levels apart (target <= {BF16_MAX_GREY_LEVELS}: {verdict})")  # fmt: skip
    if args.large:
        large_image_report(budget_gb=3.0, precision="fp32", threads=torch.get_num_threads())


if __name__ == "__main__":
    main()
