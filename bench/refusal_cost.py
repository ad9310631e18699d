"""What a turned-away REST request costs the server, against what a served one costs (issue #18).

    git worktree add /tmp/before <commit>   # a checkout to compare with (optional)
    .venv/bin/python bench/refusal_cost.py --duration 8 --rounds 2 --before-src /tmp/before/src

Past capacity, every excess request that reaches the server is turned away, and a refusal costs the
loop a share `r` of what serving a request costs. If serving uses the whole CPU at capacity, goodput
at `N` times capacity is `(1 - N*r) / (1 - r)` of it: 90% at 2x needs `r` <= 0.09.

For each server (this tree, and `--before-src`'s `src/` when given), in interleaved rounds, on
half_plus_two with `--enable_batching` and `hey -c 32` (REST, keep-alive):

- *served*: default bounds; the server's CPU time per answered request;
- *refused*: `--max_inflight_requests=1`, so nearly every request is turned away with 503; the server's
  CPU per refusal is what is left once the few served requests are charged at the served cost.

Prints both, `r`, and the goodput at 2x and 3x the formula gives.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import EXAMPLES, cpu_seconds, ensure_hey, server  # noqa: E402


def load(port: int, duration: float) -> dict[str, int]:
    """`hey -c 32` for ``duration`` seconds; responses by status code."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        handle.write(b'{"instances": [1.0, 2.0, 5.0]}')
    try:
        done = subprocess.run(
            [ensure_hey(), "-z", f"{duration}s", "-c", "32", "-m", "POST", "-D", handle.name, "-T", "application/json",
             f"http://127.0.0.1:{port}/v1/models/half_plus_two:predict"],
            capture_output=True, text=True, check=True)
    finally:
        os.unlink(handle.name)
    return {code: int(count) for code, count in re.findall(r"\[(\d+)\]\s+(\d+) responses", done.stdout)}


def measure(src: Path | None, duration: float, *flags: str) -> tuple[dict[str, int], float]:
    """Responses by code and the server's CPU seconds during the measured load."""
    with server("half_plus_two", EXAMPLES / "half_plus_two", "--enable_batching", *flags, src=src) as (rest, _, pid):
        load(rest, 1.0)  # warm-up, unmeasured
        before = cpu_seconds(pid)
        codes = load(rest, duration)
        return codes, cpu_seconds(pid) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before-src", type=Path, default=None, help="another checkout's src/ to compare with")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this tree", None)]
    if args.before_src is not None:
        trees.insert(0, ("before", args.before_src))
    print("| server | round | served req/s | served CPU/req | refused req/s (503) | served among them | "
          "CPU/refusal | r | goodput at 2x / 3x (formula) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for round_number in range(1, args.rounds + 1):
        for name, src in trees:
            served_codes, served_cpu = measure(src, args.duration)
            served = sum(served_codes.values())
            serve_cost = served_cpu / served
            refused_codes, refused_cpu = measure(src, args.duration, "--max_inflight_requests=1")
            ok, refused = refused_codes.get("200", 0), refused_codes.get("503", 0)
            refusal_cost = (refused_cpu - ok * serve_cost) / refused
            r = refusal_cost / serve_cost
            goodput = [max(0.0, (1 - n * r) / (1 - r)) for n in (2, 3)]
            print(f"| {name} | {round_number} | {served / args.duration:,.0f} | {1e6 * serve_cost:.0f} µs | "
                  f"{refused / args.duration:,.0f} | {ok} | {1e6 * refusal_cost:.0f} µs | {r:.2f} | "
                  f"{100 * goodput[0]:.0f}% / {100 * goodput[1]:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
