"""Two mlsrv source trees side by side on the small-REST path (issue #11's P1 cell), interleaved.

    .venv/bin/python bench/ab_rest.py --a <checkout>/src --b src --rounds 3 --duration 10

Each round starts A, measures it with ``hey`` (concurrency 32, half_plus_two, batching with
``bench/compare.py``'s parameters, metrics on), stops it, then does the same for B; rounds alternate
which goes first, so drift on this shared machine falls on both. Prints each cell (req/s, p50,
p99, server CPU per request from ``/proc``) and the median ratio B/A. A change to the request path
is kept when B's CPU per request is lower in every round, not on one number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_benchmarks import EXAMPLES, hey, server  # noqa: E402

BATCHING = ("max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } "
            "max_enqueued_batches { value: 1000000 } num_batch_threads { value: 1 }")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cell(src: Path, flags: list[str], model: str, body: bytes, concurrency: int, duration: float) -> dict[str, float]:
    with server(model, EXAMPLES / model, *flags, src=src) as (rest, _grpc, pid):
        url = f"http://127.0.0.1:{rest}/v1/models/{model}:predict"
        before = cpu_seconds(pid)
        result = hey(url, body, concurrency, duration)
        spent = cpu_seconds(pid) - before
    # hey's unmeasured warm-up second is inside the CPU window: count its requests as the same rate
    result["cpu_us"] = spent / (result["rps"] * (duration + 1)) * 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the baseline's src/ directory")
    parser.add_argument("--b", type=Path, required=True, help="the candidate's src/ directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--model", default="half_plus_two")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="mlsrv-ab-"))
    (scratch / "batching.txt").write_text(BATCHING)
    (scratch / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    flags = ["--enable_batching", f"--batching_parameters_file={scratch / 'batching.txt'}",
             f"--monitoring_config_file={scratch / 'monitoring.txt'}"]
    body = b'{"instances": [1.0]}'
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    print("| round | tree | req/s | p50 ms | p99 ms | errors | server CPU/req |")
    print("|---|---|---|---|---|---|---|")
    for round_ in range(args.rounds):
        order = ("A", "B") if round_ % 2 == 0 else ("B", "A")
        for name in order:
            src = args.a if name == "A" else args.b
            r = cell(src, flags, args.model, body, args.concurrency, args.duration)
            results[name].append(r)
            print(f"| {round_ + 1} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{int(r['errors'])} | {r['cpu_us']:.0f} µs |", flush=True)
    for key, label in (("rps", "req/s"), ("cpu_us", "server CPU/req")):
        ratios = [b[key] / a[key] for a, b in zip(results["A"], results["B"], strict=True)]
        print(f"B/A {label}: median {statistics.median(ratios):.3f} (rounds: "
              + ", ".join(f"{r:.3f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
