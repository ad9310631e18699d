"""Wall time of `mlsrv --help` (and of completion's re-invocation), median of N fresh processes.

    .venv/bin/python bench/startup.py --runs 15

Shell completion runs the CLI on every TAB, so its start-up is user-visible latency. Prints the
median and spread of N runs and the slowest imports of one `python -X importtime` run, so a
regression shows where it comes from. Issue #11's bar (P6): under 0.3 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MLSRV = [sys.executable, "-m", "mlsrv.cli"]


def wall_times(args: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*MLSRV, *args], capture_output=True, check=True, timeout=60, env=env)
        times.append(time.perf_counter() - started)
    return times


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
    for label, command in (("mlsrv --help", ["--help"]), ("mlsrv serve --help", ["serve", "--help"])):
        times = wall_times(command, args.runs, env)
        print(f"| `{label}` | {statistics.median(times):.3f} s | {min(times):.3f}-{max(times):.3f} s | {args.runs} |")
    print()
    print("slowest imports of `import mlsrv.cli.app` (cumulative µs):")
    for micros, name in slowest_imports(env, 12):
        print(f"  {micros:>9}  {name}")


if __name__ == "__main__":
    main()
