"""`mlsrv serve --workers N`: throughput with 1 and with N workers in one run, and memory per worker.

    .venv/bin/python bench/workers.py --duration 10 --workers 2

For each worker count, a fresh `mlsrv serve --workers=N` serves half_plus_two on free loopback ports;
REST is driven by `hey` (c=32, new connections spread over the workers by the kernel) and gRPC by
`h2load` (8 connections x 4 streams = 32 calls in flight: one HTTP/2 connection always lands on one
worker, so a single-connection client could never use a second worker). gRPC errors are counted on
the server (its summed request_count), since h2load reads HTTP status only. Prints one Markdown table
with the ratio N / 1 per protocol, the resident memory of each worker and of the supervisor, and the
client's CPU (the load generators share the machine's cores with the server).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import (  # noqa: E402
    EXAMPLES,
    MLSRV,
    cpu_seconds,
    ensure_tool,
    free_port,
    grpc_predict_body,
    hey,
    ok_predictions,
    row,
)

BODY = b'{"instances": [1.0, 2.0, 5.0]}'


@dataclass
class Served:
    rest: int
    grpc: int
    supervisor: int
    count: int

    def workers(self) -> list[int]:
        """PIDs of the serving processes: the supervisor's children, or the server itself for N=1.

        (A server's own children, the REST decode worker pool, are part of it and not listed.)
        """
        if self.count == 1:
            return [self.supervisor]
        children = Path(f"/proc/{self.supervisor}/task/{self.supervisor}/children").read_text()
        return [int(pid) for pid in children.split()]


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (a worker's REST decode pool included)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return cpu_seconds(pid) + sum(process_tree_cpu(int(child)) for child in children)
    except OSError:
        return 0.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def serve(workers: int, scratch: Path) -> Iterator[Served]:
    rest, grpc_port = free_port(), free_port()
    monitoring = scratch / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    command = [*MLSRV, "serve", "--host=127.0.0.1", f"--port={grpc_port}", f"--rest_api_port={rest}",
               "--model_name=half_plus_two", f"--model_base_path={EXAMPLES / 'half_plus_two'}",
               f"--monitoring_config_file={monitoring}"]
    if workers > 1:
        command.append(f"--workers={workers}")  # one worker is the plain server: no supervisor in between
    log = open(scratch / f"serve-{workers}.log", "w")  # noqa: SIM115
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest}/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log.name}")
            time.sleep(0.3)
        yield Served(rest, grpc_port, process.pid, workers)
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def h2load(port: int, body: Path, duration: float) -> tuple[float, int, float]:
    """(ok calls/s as h2load saw them, HTTP-level errors, h2load's CPU seconds); ``duration`` 1 warms up."""
    url = f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"
    command = [ensure_tool("h2load", "nghttp2-client"), "-c", "8", "-m", "4", "-t", "1", "-d", str(body),
               "-H", "content-type: application/grpc", "-H", "te: trailers"]
    started = os.times()
    done = subprocess.run([*command, "-D", f"{duration:g}", url], capture_output=True, check=True, text=True,
                          timeout=duration + 60)
    ended = os.times()
    match = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", done.stdout)
    if match is None:
        raise RuntimeError(done.stdout[-2000:])
    cpu = (ended.children_user - started.children_user) + (ended.children_system - started.children_system)
    return int(match.group(2)) / duration, int(match.group(3)), cpu


def measure(workers: int, duration: float, scratch: Path) -> dict[str, object]:
    body = scratch / "grpc-body.bin"
    body.write_bytes(grpc_predict_body("half_plus_two", "x", 1.0))
    with serve(workers, scratch) as served:
        pids = served.workers()
        memory = [rss_mib(pid) for pid in pids]
        cpu_before = process_tree_cpu(served.supervisor)  # the server, or the supervisor and its workers
        started = os.times()
        rest = hey(f"http://127.0.0.1:{served.rest}/v1/models/half_plus_two:predict", BODY, 32, duration)
        ended = os.times()
        hey_cpu = (ended.children_user - started.children_user) + (ended.children_system - started.children_system)
        h2load(served.grpc, body, 1.0)  # warm-up, not counted
        ok_before = ok_predictions(served.rest, "half_plus_two")
        grpc_rps, grpc_http_errors, h2_cpu = h2load(served.grpc, body, duration)
        ok_after = ok_predictions(served.rest, "half_plus_two")
        server_cpu = process_tree_cpu(served.supervisor) - cpu_before
        supervisor_mib = rss_mib(served.supervisor) if workers > 1 else 0.0
        peak = [rss_mib(pid) for pid in pids]
    return {
        "workers": workers, "rest_rps": rest["rps"], "rest_p99_ms": rest["p99_ms"], "rest_errors": rest["errors"],
        "grpc_rps": grpc_rps, "grpc_ok_server": ok_after - ok_before, "grpc_http_errors": grpc_http_errors,
        "rss_start": memory, "rss_end": peak, "supervisor_mib": supervisor_mib,
        "server_cpu_s": server_cpu, "hey_cpu_s": hey_cpu, "h2load_cpu_s": h2_cpu,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2, help="the N compared with 1")
    args = parser.parse_args()
    ensure_tool("hey", "hey")
    with tempfile.TemporaryDirectory() as folder:
        runs = [measure(n, args.duration, Path(folder)) for n in (1, args.workers)]
    print(f"cores: {os.cpu_count()}, duration {args.duration:g} s per cell, half_plus_two, no batching\n")
    print(row("workers", "REST req/s (hey c=32)", "REST p99 ms", "REST errors", "gRPC req/s (h2load 8x4)",
              "gRPC errors (server count vs h2load)", "RSS per worker MiB (start -> end)", "supervisor MiB",
              "server CPU s (REST+gRPC)", "hey / h2load CPU s"))
    print(row(*["---"] * 10))
    for run in runs:
        memory = ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(run["rss_start"], run["rss_end"], strict=False))  # type: ignore[call-overload]
        grpc_missing = int(run["grpc_rps"] * args.duration) - int(run["grpc_ok_server"])  # type: ignore[operator]
        print(row(run["workers"], f"{run['rest_rps']:,.0f}", f"{run['rest_p99_ms']:.1f}", run["rest_errors"],
                  f"{run['grpc_rps']:,.0f}", f"{run['grpc_http_errors']} (server OK {run['grpc_ok_server']:,}, "
                  f"h2load OK - server OK = {grpc_missing})", memory,
                  f"{run['supervisor_mib']:.0f}" if run["workers"] != 1 else "-",
                  f"{run['server_cpu_s']:.1f}", f"{run['hey_cpu_s']:.1f} / {run['h2load_cpu_s']:.1f}"))
    one, many = runs
    print(f"\nratio workers={args.workers} / workers=1: REST {many['rest_rps'] / one['rest_rps']:.2f}x, "  # type: ignore[operator]
          f"gRPC {many['grpc_rps'] / one['grpc_rps']:.2f}x")  # type: ignore[operator]


if __name__ == "__main__":
    main()
