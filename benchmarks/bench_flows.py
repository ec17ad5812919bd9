"""Overhead of the orchestration when nothing needs to run.

Prints the wall time of a no-op ``dvc repro`` and ``dvc status`` and of the ``pipeline`` Prefect
flow with every stage up to date (its own overhead: one ``dvc status``, six task runs, the
markdown artifact), against Prefect's temporary server, started once and excluded.

    uv run python benchmarks/bench_flows.py --project PATH   # an already reproduced project
    uv run python benchmarks/bench_flows.py                   # builds and reproduces a shrunk
                                                              # copy first (needs the mirror)
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed(fn, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _line(label: str, times: list[float]) -> str:
    return (
        f"{label:<38} median {statistics.median(times):6.2f} s  "
        f"(min {min(times):.2f}, max {max(times):.2f}, n={len(times)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a project where dvc repro has run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from flows.env import telemetry_off

    telemetry_off()
    tmp = None
    if args.project is None:
        from tests.helpers.tiny_project import make_tiny_project, project_env

        tmp = tempfile.TemporaryDirectory()
        root = make_tiny_project(Path(tmp.name) / "proj")
        env = project_env(root, Path(tmp.name) / "cache")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dvc", "repro", "-q"], cwd=root, env=env, check=True)
        print(f"{'first dvc repro (shrunk project)':<38} {time.perf_counter() - start:6.2f} s")
    else:
        root = args.project.resolve()
        from flows.dvc_runner import dvc_env

        env = dvc_env()

    def dvc(*cmd: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "dvc", *cmd], cwd=root, env=env, check=True, capture_output=True
        )

    print(_line("no-op dvc repro", _timed(lambda: dvc("repro"), args.repeat)))
    print(_line("dvc status", _timed(lambda: dvc("status"), args.repeat)))

    from prefect.testing.utilities import prefect_test_harness

    from flows.repro import run_pipeline

    with prefect_test_harness(server_startup_timeout=180):
        first = _timed(lambda: run_pipeline(str(root)), 1)
        print(_line("pipeline flow, first call (warm-up)", first))
        runs = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            result = run_pipeline(str(root))
            runs.append(time.perf_counter() - start)
            assert result["ran"] == [], result["ran"]
        print(_line("pipeline flow, all stages up to date", runs))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
