"""``coconet fuse`` wall times beside the network's own time, and the served model's answer.

Times, as a user waits for them, one 640x480 pair in bf16 (or ``--precision``):

* the network alone (the loaded model on channels-last inputs under ``inference_mode``);
* ``coconet fuse`` from a model file, and from ``models:/coconet@champion`` (a temporary SQLite
  MLflow store): the whole command, Python start-up included;
* ``uv run coconet fuse`` from the model file, as the README runs it (uv's own start and its
  check that the environment matches ``uv.lock`` included; only for this checkout, with uv on
  PATH);
* ``coconet fuse`` over 8 pairs in one call: what each further pair adds;
* ``mlflow models serve`` (``--env-manager local``): one 640x480 request (base64 PNGs), the
  server started as the README starts it (``MALLOC_ARENA_MAX=1``: every thread on one glibc heap)
  and, for comparison, without that setting.

Targets (issue 17): one pair from a file within 3 s and from the registry within 4 s; each
further pair within 1.3x the network time; a served request within 1.3x the network time.
The issue's host ran the network in 0.64 s; a slower host's network eats into the 3 s, so the
benchmark also prints what each call adds to the network against the same budget (target minus
0.64 s), which does not depend on how fast the host computes.
Each figure is the median of ``--runs`` runs; the rounds interleave the commands, so load from
other processes falls on all of them alike. The load average is printed: on a shared machine the
absolute figures move with it, the ratios to the network time much less, and the commands' CPU
seconds (user + system, all threads) hardly at all.

``--source DIR`` times another checkout (e.g. an older commit from ``git worktree add``) with
this environment: its own code writes the model file and the registered model, so it is timed
with the files it writes. The network time is measured with the same source.

    uv run python benchmarks/bench_fuse.py [--runs 5] [--source DIR] [--no-serve]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, PAIRS = 640, 480, 8
TNO = "raw.githubusercontent.com/Zhaozixiang1228/IVIF-DIDFuse/5f287300dce7cbc90b9e08e6872455af6baa279f/Datasets/Test_data_TNO"  # noqa: E501
TARGETS = {"file": 3.0, "registry": 4.0}  # seconds, one pair
PAIR_RATIO = SERVE_RATIO = 1.3  # x the network time
# The network time on the host issue 17 measured (bf16, 640x480): its targets leave the wall time
# minus this for everything around the network, a reading that does not move with the host's
# compute speed as the absolute targets do.
ISSUE_NETWORK = 0.64  # seconds
# How the README starts the server: glibc otherwise gives each request's worker thread its own
# heap, which does not keep what the network frees (pipeline/core/heap.py).
SERVE_ARENAS = "1"

SETUP = """
import json, sys, torch, mlflow
from pathlib import Path
from models.coconet import CoCoNet
from pipeline.training.outputs import write_model_file
from pipeline.tracking import pyfunc_model
work = Path(sys.argv[1])
torch.manual_seed(0)
model = CoCoNet(vgg_weights="random").eval()
write_model_file(work / "model.pt", model, {"vgg_weights": "random", "params": {}})
torch.save({"state_dict": model.state_dict(), "vgg_weights": "random"}, work / "full_vgg.pt")
mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
experiment = mlflow.create_experiment("bench", (work / "mlartifacts").as_uri())
with mlflow.start_run(experiment_id=experiment) as run:
    pyfunc_model.log_model(model, {"vgg_weights": "random"})
version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "coconet")
mlflow.MlflowClient().set_registered_model_alias("coconet", "champion", version.version)
weights = next((work / "mlartifacts").rglob("model.safetensors"))
print(json.dumps({"registered": weights.stat().st_size}))
"""

NETWORK = """
import json, statistics, sys, time, torch
from pipeline.core.placement import Device, Precision, place
from pipeline.inference import load_fusion_model
model_file, runs, precision = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:  # the process heap as `coconet fuse` sets it (pipeline/core/heap.py)
    from pipeline.core.heap import keep_freed_memory
    keep_freed_memory()
except ImportError:  # a --source checkout from before it
    pass
placement = place(Device.cpu, Precision(precision), None)
model = load_fusion_model(model_file, placement)
vis, ir = (torch.rand(1, 1, 480, 640).mul(2).sub(1).contiguous(memory_format=torch.channels_last)
           for _ in range(2))
def call():
    with torch.inference_mode(), placement.autocast():
        model(vis, ir)
call()
times = []
for _ in range(runs):
    tic = time.perf_counter(); call(); times.append(time.perf_counter() - tic)
print(json.dumps(times))
"""


def _env(source: Path, store: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(source)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if store is not None:
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}"
    return env


def _pairs(work: Path, mirror: Path) -> tuple[Path, Path]:
    """8 pairs at 640x480 in ``work/vis`` and ``work/ir``: TNO pairs from the mirror when
    present (area-resized), else seeded synthetic scenes."""
    vis_dir, ir_dir = work / "vis", work / "ir"
    vis_dir.mkdir(), ir_dir.mkdir()
    rng = np.random.default_rng(0)
    for index in range(1, PAIRS + 1):
        for folder, prefix in ((vis_dir, "VIS"), (ir_dir, "IR")):
            source = mirror / TNO / f"{prefix}{index}.bmp"
            if source.is_file():
                image = Image.open(source).convert("L").resize((WIDTH, HEIGHT), Image.BOX)
            else:
                image = Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH), dtype=np.uint8))
            image.save(folder / f"p{index}.png")
    return vis_dir, ir_dir


def _bytecode_note() -> str | None:
    """Why every call would compile torch from source here, or None: no bytecode cache for
    torch and Python told not to write one (``PYTHONDONTWRITEBYTECODE``)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None or not sys.dont_write_bytecode:
        return None
    if Path(importlib.util.cache_from_source(spec.origin)).is_file():
        return None
    return ("torch has no bytecode cache and PYTHONDONTWRITEBYTECODE is set: every call compiles "
            "it from source (about 2.5 s more); run `uv sync --compile-bytecode` once")  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _wall(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one command run to its end."""
    cpu, tic = _children_cpu(), time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - tic
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    return elapsed, _children_cpu() - cpu


def _network(source: Path, model: Path, runs: int, precision: str) -> list[float]:
    command = [sys.executable, "-c", NETWORK, str(model), str(runs), precision]
    done = subprocess.run(command, env=_env(source), cwd=source, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"network timing failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _served(
    source: Path, store: Path, vis: Path, ir: Path, runs: int, log: Path, arenas: str | None
) -> list[float]:
    """Request times of ``mlflow models serve`` for one pair (after one warm-up request), the
    server's ``MALLOC_ARENA_MAX`` set to ``arenas`` (None: unset)."""
    port = _free_port()
    env = {k: v for k, v in _env(source, store).items() if k != "MALLOC_ARENA_MAX"}
    if arenas is not None:
        env["MALLOC_ARENA_MAX"] = arenas
    mlflow = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow), "models", "serve", "-m", "models:/coconet@champion"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, env=env, cwd=source, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"dataframe_records": [{"vis": _png64(vis), "ir": _png64(ir)}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            body.encode(),
            {"Content-Type": "application/json"},
        )
        times = []
        for _ in range(runs + 1):
            tic = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                answer = json.loads(response.read())
            times.append(time.perf_counter() - tic)
            assert answer["predictions"][0]["fused"], answer
        return times[1:]
    finally:
        server.terminate()
        server.wait(timeout=60)


def _row(
    label: str,
    seconds: float,
    ratio: float | None,
    target: str = "",
    cpu: list[float] | None = None,
) -> None:
    spent = f"{statistics.median(cpu):>7.2f}" if cpu else " " * 7
    times = f"{ratio:>10.2f}" if ratio is not None else " " * 10
    print(f"{label:<48} {seconds:>9.3f} {times} {spent}  {target}")


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout whose code is timed")
    parser.add_argument("--mirror", type=Path, default=ROOT.parent / "shared" / "mirror")
    parser.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    source = args.source.resolve()
    print(f"coconet fuse, {WIDTH}x{HEIGHT}, {args.precision}, median of {args.runs}; "
          f"source {source}; load average at start {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-fuse-") as tmp:
        work = Path(tmp)
        vis_dir, ir_dir = _pairs(work, args.mirror)
        done = subprocess.run([sys.executable, "-c", SETUP, str(work)], env=_env(source),
                              cwd=source, capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"setup failed:\n{done.stderr[-3000:]}")
        registered = json.loads(done.stdout.strip().splitlines()[-1])["registered"]
        model, store = work / "model.pt", work / "mlflow.db"
        pair = ["--vis", str(vis_dir / "p1.png"), "--ir", str(ir_dir / "p1.png")]
        fuse = [sys.executable, "-m", "pipeline.cli", "fuse", "--precision", args.precision]
        commands = {
            "file": (fuse + ["--model", str(model), *pair, "-o", str(work / "a.png")], None),
            "registry": (
                fuse + ["--model", "models:/coconet@champion", *pair, "-o", str(work / "b.png")],
                store,
            ),
            "folder": (
                fuse
                + [
                    "--model",
                    str(model),
                    "--vis-dir",
                    str(vis_dir),
                    "--ir-dir",
                    str(ir_dir),
                    "-o",
                    str(work / "out"),
                ],  # fmt: skip
                None,
            ),
        }
        uv = shutil.which("uv")
        if uv is not None and source == ROOT:  # the README's way, in this project's environment
            readme_way = [uv, "run", "--quiet", "coconet", "fuse", "--precision", args.precision]
            readme_way += ["--model", str(model), *pair, "-o", str(work / "c.png")]
            commands["uv"] = (readme_way, None)
        network, walls = [], {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):  # each round: the network, then every command
            network.append(statistics.median(_network(source, model, 3, args.precision)))
            for name, (command, env_store) in commands.items():
                wall, seconds = _wall(command, _env(source, env_store), source)
                walls[name].append(wall)
                cpu[name].append(seconds)
        served, served_default, served_network = [], [], []
        if args.serve:
            pair_files = (vis_dir / "p1.png", ir_dir / "p1.png")
            log = work / "serve.log"
            served_network = _network(source, model, args.runs, args.precision)
            served = _served(source, store, *pair_files, args.runs, log, SERVE_ARENAS)
            served_network += _network(source, model, args.runs, args.precision)
            served_default = _served(source, store, *pair_files, args.runs, log, None)
            served_network += _network(source, model, args.runs, args.precision)
        sizes = {"model.pt": model.stat().st_size, "full_vgg.pt": (work / "full_vgg.pt").stat()}
        sizes["full_vgg.pt"] = sizes["full_vgg.pt"].st_size
    net = statistics.median(network)
    median = {name: statistics.median(times) for name, times in walls.items()}
    further = [
        (f - one) / (PAIRS - 1) for f, one in zip(walls["folder"], walls["file"], strict=True)
    ]
    ratio = {name: statistics.median(w / n for w, n in zip(times, network, strict=True))
             for name, times in {**walls, "further": further}.items()}  # fmt: skip
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    if (note := _bytecode_note()) is not None:
        print(f"note: {note}")
    print(f"{'what':<48} {'median s':>9} {'x network':>10} {'CPU s':>7}  target (x network: "
          "median of the rounds' ratios)")  # fmt: skip
    _row(f"network alone ({args.precision}, {WIDTH}x{HEIGHT})", net, 1.0)
    for name, label in (
        ("file", "--model model.pt"),
        ("registry", "--model models:/coconet@champion"),
    ):
        target = TARGETS[name]
        verdict = f"<= {target:.1f} s: {_verdict(median[name] <= target)}"
        _row(f"fuse one pair, {label}", median[name], ratio[name], verdict, cpu[name])
    if "uv" in median:
        verdict = f"<= {TARGETS['file']:.1f} s: {_verdict(median['uv'] <= TARGETS['file'])}"
        _row("  the same as the README runs it (uv run coconet)", median["uv"], ratio["uv"],
             verdict, cpu["uv"])  # fmt: skip
    else:
        print("  (uv run coconet fuse: not timed; it needs uv on PATH and this checkout)")
    for name in ("file", "registry"):
        added = statistics.median(w - n for w, n in zip(walls[name], network, strict=True))
        budget = TARGETS[name] - ISSUE_NETWORK
        verdict = f"<= {budget:.2f} s: {_verdict(added <= budget)}"
        _row(f"  what the {name} call adds to the network", added, None,
             f"{verdict} (target - the issue host's {ISSUE_NETWORK} s network)")  # fmt: skip
    _row(f"fuse {PAIRS} pairs in one call", median["folder"], ratio["folder"], "", cpu["folder"])
    verdict = f"<= {PAIR_RATIO}x network: {_verdict(ratio['further'] <= PAIR_RATIO)}"
    further_cpu = [
        (f - one) / (PAIRS - 1) for f, one in zip(cpu["folder"], cpu["file"], strict=True)
    ]
    _row(f"each further pair (({PAIRS} pairs - 1) / {PAIRS - 1})", statistics.median(further),
         ratio["further"], verdict, further_cpu)  # fmt: skip
    if served:
        request, reference = statistics.median(served), statistics.median(served_network)
        verdict = f"<= {SERVE_RATIO}x network: {_verdict(request <= SERVE_RATIO * reference)}"
        _row(f"served request (MALLOC_ARENA_MAX={SERVE_ARENAS} mlflow models serve)", request,
             request / reference, verdict)  # fmt: skip
        default = statistics.median(served_default)
        _row("  the same server without MALLOC_ARENA_MAX", default, default / reference)
        print(f"  (network alone around the served requests: {reference:.3f} s)")
    print(f"model file {sizes['model.pt'] / 1e6:.1f} MB (a full-VGG file of the same network "
          f"{sizes['full_vgg.pt'] / 1e6:.1f} MB); registered model.safetensors "
          f"{registered / 1e6:.1f} MB")  # fmt: skip
    runs = {"network": network, **walls, "served": served, "served_default": served_default}
    runs["served_network"] = served_network
    runs |= {f"{name}_cpu": seconds for name, seconds in cpu.items()}
    print("all runs (s):", json.dumps({k: [round(v, 3) for v in vs] for k, vs in runs.items()}))


if __name__ == "__main__":
    main()
