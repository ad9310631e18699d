"""Two mlsrv source trees side by side on one of issue #11's small cells, interleaved.

    .venv/bin/python bench/ab.py --a <checkout>/src --b src --rounds 3 --duration 8
    .venv/bin/python bench/ab.py --a <checkout>/src --b src --protocol grpc
    .venv/bin/python bench/ab.py --a src --b src --b-python /tmp/v312/bin/python   # interpreters

Each round starts A, measures it (concurrency 32 on half_plus_two, batching with
``bench/compare.py``'s parameters, metrics on: REST with ``hey``, gRPC with ``h2load``), stops it,
then does the same for B; rounds alternate which goes first, so drift on this shared machine falls
on both. Prints each cell (req/s, p50, p99, mean batch, server CPU per request from ``/proc``) and
the median ratio B/A. A change to the request path is kept when B's CPU per request is lower in
every round, not on one number.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare import BATCHING, Model, Run  # noqa: E402
from run_benchmarks import EXAMPLES, server  # noqa: E402


def cell(src: Path, python: str, flags: list[str], model: Model, protocol: str, concurrency: int, duration: float,
         scratch: Path) -> dict[str, float]:  # fmt: skip
    """One cell, measured as bench/compare.py measures its cells (``Run.rest_sweep`` / ``Run.grpc_cell``)."""
    run = Run(duration)
    with server(model.name, model.base, *flags, src=src, python=python) as (rest, grpc_port, pid):
        if protocol == "rest":
            run.rest_sweep(model, "mlsrv", rest, pid, [concurrency], metrics_port=rest)
            return run.cells[(model.name, "mlsrv", "REST", concurrency)]
        run.grpc_cell(model, "mlsrv", grpc_port, pid, scratch, metrics_port=rest, streams=concurrency)
        return run.cells[(model.name, "mlsrv", "gRPC", concurrency)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="the baseline's src/ directory")
    parser.add_argument("--b", type=Path, required=True, help="the candidate's src/ directory")
    parser.add_argument("--a-python", default=sys.executable, help="A's interpreter (default: this one)")
    parser.add_argument("--b-python", default=sys.executable, help="B's interpreter (default: this one)")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlsrv-ab-") as folder:
        compare(args, Path(folder))


def compare(args: argparse.Namespace, scratch: Path) -> None:
    """The interleaved rounds, with their flag files in ``scratch``."""
    (scratch / "batching.txt").write_text(BATCHING)
    (scratch / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    flags = ["--enable_batching", f"--batching_parameters_file={scratch / 'batching.txt'}",
             f"--monitoring_config_file={scratch / 'monitoring.txt'}"]
    model = Model("half_plus_two", EXAMPLES / "half_plus_two", "x", ())
    results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    print(f"{args.protocol}, concurrency {args.concurrency}, {args.duration:g} s per cell")
    print("| round | tree | req/s | p50 ms | p99 ms | errors | mean batch | server CPU/req |")
    print("|---|---|---|---|---|---|---|---|")
    for round_ in range(args.rounds):
        for name in ("A", "B") if round_ % 2 == 0 else ("B", "A"):
            src, python = (args.a, args.a_python) if name == "A" else (args.b, args.b_python)
            r = cell(src, python, flags, model, args.protocol, args.concurrency, args.duration, scratch)
            results[name].append(r)
            print(f"| {round_ + 1} | {name} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                  f"{int(r['errors'])} | {r['batch']:.1f} | {r['cpu_us']:.0f} µs |",
                  flush=True)  # fmt: skip
    for key, label in (("rps", "req/s"), ("cpu_us", "server CPU/req")):
        ratios = [b[key] / a[key] for a, b in zip(results["A"], results["B"], strict=True)]
        print(f"B/A {label}: median {statistics.median(ratios):.3f} (rounds: "
              + ", ".join(f"{r:.3f}" for r in ratios) + ")")


if __name__ == "__main__":
    main()
