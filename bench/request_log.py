"""Request logging (issue #15): what logging every call costs, and that a full log queue costs nothing.

    .venv/bin/python bench/request_log.py --duration 10 --rounds 3

Three `mlsrv serve` processes per model, started together and measured in turn (interleaved rounds, so
the shared machine's noise falls on every case alike), REST with `hey` at concurrency 32:

  off      no `logging_config`;
  logged   `sampling_rate: 1.0` into a file: every call is written (the writer thread's cost shows);
  stalled  `sampling_rate: 1.0` into a pipe whose reader never reads (a disk that stopped): the writer
           blocks, the queue (`--request_log_queue_bytes`, here 4 MiB) fills, and every call after that
           is sampled, dropped and counted on the serving path.

The claim under test: `stalled` serves like `off` (dropping costs a random number and a lock), and
no request waits for the log. Each server's `request_log_count` cells are printed after the runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import EXAMPLES, hey, server  # noqa: E402

MLP_ROWS = b",".join([b"[0.1, 0.2, 0.3, 0.4]"] * 256)
MODELS = {
    "half_plus_two": (EXAMPLES / "half_plus_two", b'{"instances": [[1.0]]}'),
    "mlp_256_rows": (EXAMPLES / "mlp_classifier", b'{"instances": [' + MLP_ROWS + b"]}"),
}
CASES = ("off", "logged", "stalled")
MONITORING = 'prometheus_config { enable: true path: "/metrics" }\n'
QUEUE_BYTES = 4 << 20


def config(work: Path, base: Path, case: str) -> Path:
    logging = ""
    if case != "off":
        logging = (f'logging_config {{ log_collector_config {{ type: "tfrecord" filename_prefix: "{work}/{case}/m" }} '
                   "sampling_config { sampling_rate: 1.0 } }")  # fmt: skip
    path = work / f"{case}.config"
    path.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" '
                    f"{logging} }} }}\n")  # fmt: skip
    return path


@contextmanager
def stalled_pipe(path: Path) -> Iterator[None]:
    """A FIFO at ``path`` with a reader that holds it open and never reads; at the end it is read to
    its end (the server's exit closes it), so the stopping server can write what it holds and exit."""
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        yield
    finally:
        os.set_blocking(reader, True)

        def drain() -> None:
            try:
                while os.read(reader, 1 << 16):
                    pass
            finally:
                os.close(reader)

        threading.Thread(target=drain, daemon=True).start()


def metrics_cells(rest: int) -> dict[str, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest}/metrics", timeout=10) as reply:
        page = reply.read().decode()
    cells = {}
    for line in page.splitlines():
        if line.startswith(":tensorflow:serving:request_log_count{"):
            labels, value = line.rsplit(" ", 1)
            cells[labels.split('status_code="')[1].rstrip('"}')] = int(value)
    return cells


def run_model(name: str, duration: float, rounds: int) -> None:
    base, body = MODELS[name]
    with tempfile.TemporaryDirectory(prefix="mlsrv-reqlog-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        monitoring = work / "monitoring.config"
        monitoring.write_text(MONITORING)
        ports: dict[str, int] = {}
        for case in CASES:
            (work / case).mkdir()
            rest, _, pid = stack.enter_context(server(
                "m", base, f"--model_config_file={config(work, base, case)}", f"--monitoring_config_file={monitoring}",
                f"--request_log_queue_bytes={QUEUE_BYTES}"))  # fmt: skip
            if case == "stalled":  # the first file the server will open, made a pipe before the first request
                stack.enter_context(stalled_pipe(work / case / f"m-{pid}-00000.tfrecord"))
            ports[case] = rest
        results: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
        for _ in range(rounds):
            for case in CASES:
                results[case].append(hey(f"http://127.0.0.1:{ports[case]}/v1/models/m:predict", body, 32, duration))
        print(f"\n### {name}, REST, hey -c 32, {rounds} x {duration:g} s (median; ratio to `off`)\n")
        print("| case | req/s | vs off | p50 ms | p99 ms | non-200 | request_log_count |")
        print("|---|---|---|---|---|---|---|")
        base_rps = statistics.median(r["rps"] for r in results["off"])
        for case in CASES:
            runs = results[case]
            rps = statistics.median(r["rps"] for r in runs)
            cells = metrics_cells(ports[case])
            counted = ", ".join(f"{k} {v}" for k, v in sorted(cells.items())) or "-"
            print(f"| {case} | {rps:,.0f} | {rps / base_rps:.2f}x | {statistics.median(r['p50_ms'] for r in runs):.2f} "
                  f"| {statistics.median(r['p99_ms'] for r in runs):.2f} | {int(sum(r['errors'] for r in runs))} "
                  f"| {counted} |")  # fmt: skip
        print("\nper round req/s: " + "; ".join(
            f"{case} " + " / ".join(f"{r['rps']:,.0f}" for r in results[case]) for case in CASES))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    for name in args.models.split(","):
        run_model(name, args.duration, args.rounds)


if __name__ == "__main__":
    main()
