"""bf16 against fp32 fusion, pixel by pixel, over a test set (the target: every 8-bit pixel within
2 grey levels of fp32's on the TNO test pairs).

Fuses each test pair of ``--test-set`` (``data/raw/index.csv``) with the model twice through
:func:`pipeline.fusion.fuse_arrays`, as ``coconet fuse`` and the evaluate stage do: in fp32 and
under bf16 autocast (same device, same memory budget, so the same tiles), rounds both to 8 bits as
the saved images are, and reports the worst pixel (pair, row, column, both values), how many
pixels differ by more than ``--limit``, and the PSNR of bf16 against fp32 over all pixels (and
the worst pair's), then ``met`` or ``MISSED``. ``--fp32-modules`` names submodules (e.g. ``out``,
``dec1``, ``mam2``) to run in fp32 inside the bf16 pass: where bf16 loses the precision.

    uv run python benchmarks/bench_bf16_fidelity.py --model artifacts/model.pt [--test-set tno40]
        [--limit 2] [--device cpu] [--pairs 38] [--fp32-modules out dec1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from models.precision import keep_fp32  # noqa: E402
from pipeline.catalogue.index import load_test_split  # noqa: E402
from pipeline.core.imageio import read_image, to_uint8  # noqa: E402
from pipeline.core.params import PROJECT_ROOT  # noqa: E402
from pipeline.core.placement import place  # noqa: E402
from pipeline.fusion import fuse_arrays  # noqa: E402
from pipeline.inference import load_fusion_model  # noqa: E402


def psnr(mse: float) -> float:
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model.pt, an MLflow model URI, official")
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT)
    parser.add_argument("--test-set", default="tno40")
    parser.add_argument("--limit", type=int, default=2, help="grey levels")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-memory", default="8GB")
    parser.add_argument("--max-pairs", type=int, default=None)
    parser.add_argument("--pairs", nargs="*", default=[], help="only these pair names")
    parser.add_argument("--fp32-modules", nargs="*", default=[])
    args = parser.parse_args(argv)

    test = load_test_split(args.root / "data/raw/index.csv", per_set={})
    test = test[test["dataset"] == args.test_set].head(args.max_pairs or len(test))
    if args.pairs:
        test = test[test["pair"].isin(args.pairs)]
    fp32 = place(args.device, "fp32", args.max_memory)
    bf16 = place(args.device, "bf16", args.max_memory)
    model = load_fusion_model(args.model, fp32, args.root)
    keep_fp32(model, args.fp32_modules)
    worst = (-1, "", 0, 0, 0, 0)
    squared, pixels, over, worst_pair_psnr = 0.0, 0, 0, (float("inf"), "")
    seconds = {"fp32": 0.0, "bf16": 0.0}
    for pair in test.itertuples(index=False):
        vis, ir = (read_image(args.root / p) for p in (pair.vis, pair.ir))
        outputs = {}
        for name, placement in (("fp32", fp32), ("bf16", bf16)):
            tic = time.perf_counter()
            outputs[name] = to_uint8(fuse_arrays(model, vis, ir, placement)).astype(np.int16)
            seconds[name] += time.perf_counter() - tic
        diff = np.abs(outputs["bf16"] - outputs["fp32"])
        y, x = np.unravel_index(int(diff.argmax()), diff.shape[:2])
        if diff.max() > worst[0]:
            worst = (int(diff.max()), pair.pair_id, int(y), int(x),
                     int(outputs["fp32"][y, x]), int(outputs["bf16"][y, x]))  # fmt: skip
        squared += float((diff.astype(np.float64) ** 2).sum())
        pixels += diff.size
        over += int((diff > args.limit).sum())
        pair_psnr = psnr(float((diff.astype(np.float64) ** 2).mean()))
        worst_pair_psnr = min(worst_pair_psnr, (pair_psnr, pair.pair_id))
        print(f"{pair.pair_id}: max |bf16 - fp32| {int(diff.max())}, PSNR {pair_psnr:.2f} dB")
    met = worst[0] <= args.limit
    kept = ", ".join(args.fp32_modules) or "none"
    print(
        f"\n{args.test_set}, {len(test)} pairs, {pixels} pixels, on {args.device}; "
        f"modules kept in fp32: {kept}\n"
        f"worst pixel: {worst[0]} grey levels at {worst[1]} (row {worst[2]}, column {worst[3]}: "
        f"fp32 {worst[4]}, bf16 {worst[5]}); pixels over {args.limit}: {over} "
        f"({over / max(pixels, 1):.2e})\n"
        f"PSNR bf16 vs fp32: {psnr(squared / max(pixels, 1)):.2f} dB over all pixels, "
        f"{worst_pair_psnr[0]:.2f} dB on the worst pair ({worst_pair_psnr[1]})\n"
        f"time: fp32 {seconds['fp32']:.1f} s, bf16 {seconds['bf16']:.1f} s\n"
        f"target (every pixel within {args.limit} grey levels): {'met' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
