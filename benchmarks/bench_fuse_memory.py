"""Peak memory of a whole ``coconet fuse`` process against its ``--max-memory`` budget.

Each case runs ``coconet fuse`` in its own process on a synthetic pair (default 4000x3000) with a
seeded random-weights model file, and reads the process's peak resident set
(``getrusage(RUSAGE_CHILDREN)`` of a one-case wrapper). The fixed size, what any fusion costs
(Python, torch and the libraries, the model), is measured the same way on a 64x64 pair; a case
meets its target when ``peak <= budget + fixed``.

    python benchmarks/bench_fuse_memory.py [--size 4000x3000] [--budgets 1.5GB,3GB]
        [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline.core.placement import parse_memory  # noqa: E402

WRAPPER = """
import json, resource, subprocess, sys, time
tic = time.perf_counter()
code = subprocess.run(sys.argv[1:], capture_output=True, text=True)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps({"rc": code.returncode, "peak": peak, "seconds": time.perf_counter() - tic,
                  "err": code.stderr[-500:]}))
"""


def _pair(folder: Path, width: int, height: int, name: str) -> tuple[Path, Path]:
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    paths = []
    for role, wave in (
        ("ir", np.sin(x / 37.0) * np.cos(y / 23.0)),
        ("vis", np.cos(x / 51 + y / 19)),
    ):
        image = (128 + 60 * wave + rng.normal(0, 10, (height, width))).clip(0, 255)
        paths.append(folder / f"{name}_{role}.png")
        Image.fromarray(image.astype(np.uint8)).save(paths[-1])
    return paths[0], paths[1]


def _fuse(model: Path, ir: Path, vis: Path, out: Path, precision: str, budget: str) -> dict:
    cmd = [sys.executable, "-c", "from pipeline.cli import main; main()", "fuse", "--model",
           str(model), "--ir", str(ir), "--vis", str(vis), "-o", str(out), "--device", "cpu",
           "--precision", precision, "--max-memory", budget]  # fmt: skip
    run = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True)
    result = json.loads(run.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"coconet fuse failed: {result['err']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x3000")
    parser.add_argument("--budgets", default="1.5GB,3GB")
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        from models.coconet import CoCoNet

        net = CoCoNet(vgg_weights="random").eval()
        model = folder / "model.pt"
        torch.save({"state_dict": net.state_dict(), "vgg_weights": "random", "params": {}}, model)
        small, big = _pair(folder, 64, 64, "small"), _pair(folder, width, height, "big")
        fixed = _fuse(model, *small, folder / "s.png", "fp32", "3GB")["peak"]
        print(
            f"coconet fuse, whole-process peak RSS; fixed size (64x64 pair): {fixed / 1e9:.2f} GB"
        )
        print(f"{'case':<28} {'peak GB':>8} {'budget+fixed':>13} {'s':>6}")
        for precision in args.precisions.split(","):
            for budget in args.budgets.split(","):
                result = _fuse(model, *big, folder / "b.png", precision, budget)
                limit = parse_memory(budget) + fixed
                verdict = "met" if result["peak"] <= limit else "MISSED"
                print(f"{args.size} {precision} {budget:<10} {result['peak'] / 1e9:>8.2f} "
                      f"{limit / 1e9:>13.2f} {result['seconds']:>6.0f}  {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
