"""Start-up of the CLI: wall time and peak RSS of whole `mlsrv` processes, median of N fresh runs.

    .venv/bin/python bench/startup.py --runs 15

Shell completion runs the CLI on every TAB and scripts call `mlsrv predict` many times a day, so
their start-up is user-visible latency. Measured: `mlsrv --help`, `mlsrv serve --help`, and one
`mlsrv predict` over REST and over gRPC against a `mlsrv serve` this script starts (half_plus_two).
Peak RSS is the child's `ru_maxrss`. Prints the slowest imports of one `python -X importtime` run,
so a regression shows where it comes from. Bars: `--help` under 0.3 s (issues #11 P6 and #13);
`predict` under 0.5 s and 100 MB over either protocol (issue #13).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import EXAMPLES, server  # noqa: E402

MLSRV = [sys.executable, "-m", "mlsrv.cli"]


def wall_times(args: list[str], runs: int, env: dict[str, str]) -> list[tuple[float, int]]:
    """(wall seconds, peak RSS bytes) of each of ``runs`` fresh ``mlsrv ARGS`` processes."""
    results = []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen([*MLSRV, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        if status != 0:
            raise RuntimeError(f"mlsrv {' '.join(args)} failed: {process.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
        process.returncode = 0
        results.append((elapsed, usage.ru_maxrss * 1024))
    return results


def row(label: str, results: list[tuple[float, int]]) -> str:
    times = [t for t, _ in results]
    peak = max(rss for _, rss in results)
    return (f"| `{label}` | {statistics.median(times):.3f} s | {min(times):.3f}-{max(times):.3f} s "
            f"| {peak / 2**20:.0f} MiB | {len(results)} |")


def slowest_imports(env: dict[str, str], count: int) -> list[tuple[int, str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import mlsrv.cli.app"],
                          capture_output=True, text=True, check=True, timeout=60, env=env)
    rows = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--src", type=Path, default=None, help="another checkout's src/ to measure (PYTHONPATH)")
    args = parser.parse_args()
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    wall_times(["--help"], 2, env)  # warm the file cache
    print("| command | median wall | range | peak RSS | runs |\n|---|---|---|---|---|")
    for label, command in (("mlsrv --help", ["--help"]), ("mlsrv serve --help", ["serve", "--help"])):
        print(row(label, wall_times(command, args.runs, env)))
    with server("half_plus_two", EXAMPLES / "half_plus_two") as (rest, grpc_port, _):
        request = ["-m", "half_plus_two", "-d", '{"instances": [[1.0]]}']
        for label, target in (("REST", ["--rest", f"127.0.0.1:{rest}"]),
                              ("gRPC", ["--grpc", f"127.0.0.1:{grpc_port}"])):
            command = ["predict", *target, *request]
            wall_times(command, 1, env)  # warm
            print(row(f"mlsrv predict ({label}, one request)", wall_times(command, args.runs, env)))
    print()
    print("slowest imports of `import mlsrv.cli.app` (cumulative µs):")
    for micros, name in slowest_imports(env, 12):
        print(f"  {micros:>9}  {name}")


if __name__ == "__main__":
    main()
