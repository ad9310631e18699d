"""Open-loop overload: goodput, latency, rejections and memory at 0.5x-5x the measured capacity (issue #18).

    .venv/bin/python bench/overload.py --duration 10 --plots docs/perf     # ~12 minutes on 2 cores
    .venv/bin/python bench/overload.py --cases half_plus_two:rest --multiples 1,3
    .venv/bin/python bench/overload.py --server-cpus 0 --client-cpus 1   # server and load apart

For each case (model, protocol, rows per request) a fresh `mlsrv serve --enable_batching` (TF
Serving's default batching parameters, Prometheus on) is measured closed-loop first (`mlsrv bench
-c 32 --workers 2`, the same client processes as the steps): that is the capacity. Then `mlsrv
bench --rate` sends open-loop load at each multiple of it (latency from the intended send time,
10 s client timeout, 2 client processes, no warm-up: every request of the step is counted, see
`bench`) while this script
samples the server's RSS (20 Hz) and times a `/healthz` probe every 20 ms. Between steps it waits
until the server has nothing in flight. Printed per step: goodput (successful requests/s) as a share
of capacity, p50/p99 of successful requests, errors by code, the cores the client used while
sending (and "bound" when it could not keep up), the server's peak
RSS, the probe's p99, and the host's TCP counters over the step (connections accepted, handshakes
dropped by a full listen queue, SYNs resent: past capacity, small REST requests bring a connection
each, see docs/benchmarks.md); `--plots DIR` draws goodput against offered load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import export  # noqa: E402
from run_benchmarks import EXAMPLES, MLSRV, metrics_page, server  # noqa: E402

CASES = {  # name: (model folder kind, protocol, rows per request)
    "half_plus_two:rest": ("half_plus_two", "rest", 1),
    "half_plus_two:grpc": ("half_plus_two", "grpc", 1),
    "mlp:rest": ("mlp", "rest", 64),
    "mlp:grpc": ("mlp", "grpc", 256),
}


def bench(target: str, protocol: str, model: str, rows: int, duration: float, *load: str,
          prefix: Sequence[str] = (), warmup: str = "1s") -> dict[str, Any]:
    """One `mlsrv bench` run; its ``--json`` report.

    ``warmup``: the open-loop steps use none. Past capacity the server holds a standing queue (up to
    its admission bound, seconds of work); requests sent during a warm-up are still in it when
    measurement starts, and serving them takes server time inside the measured window without being
    counted: at 3x on the MLP over REST, with a ~3.5 s queue, about a third of the window (goodput
    read 59-65% of capacity with a 1 s warm-up where the server kept completing at capacity,
    docs/benchmarks.md). With none, every request of the step is counted and the window runs to the
    last answer. The server is warm by then: the capacity run and earlier steps came first.
    """
    done = subprocess.run(
        [*prefix, *MLSRV, "bench", "--target", target, "--protocol", protocol, "--model", model,
         "--batch-size", str(rows), "--duration", f"{duration:g}s", "--warmup", warmup, "--timeout", "10s", "--json",
         *load],
        capture_output=True, text=True, timeout=duration + 120)
    if done.returncode not in (0, 1):
        raise RuntimeError(done.stderr[-2000:])
    report: dict[str, Any] = json.loads(done.stdout)
    return report


class Sampler:
    """Peak RSS of the server (20 Hz) and /healthz latency (every 20 ms) while a step runs."""

    def __init__(self, pid: int, rest_port: int) -> None:
        self.pid, self.rest_port = pid, rest_port
        self.peak_rss = 0
        self.probes: list[float] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._probe)]

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _rss(self) -> None:
        while not self._stop.wait(0.05):
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
            if match:
                self.peak_rss = max(self.peak_rss, int(match.group(1)) * 1024)

    def _probe(self) -> None:
        url = f"http://127.0.0.1:{self.rest_port}/healthz"
        while not self._stop.wait(0.02):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=10) as reply:
                    reply.read()
            except OSError:
                pass  # a failed probe counts with its full wait
            self.probes.append(time.perf_counter() - started)

    def probe_p99_ms(self) -> float:
        if not self.probes:
            return float("nan")
        return 1000 * statistics.quantiles(self.probes, n=100)[98] if len(self.probes) > 1 else 1000 * self.probes[0]


def tcp_counters() -> dict[str, int]:
    """The kernel's TCP counters that tell connections apart from requests (Linux; empty elsewhere):
    connections accepted, handshakes dropped because a listen queue was full, and SYNs sent again."""
    wanted = {"PassiveOpens": "accepted", "ListenOverflows": "listen_overflows", "TCPSynRetrans": "syn_retransmits"}
    found: dict[str, int] = {}
    for table in ("/proc/net/snmp", "/proc/net/netstat"):
        try:
            lines = Path(table).read_text().splitlines()
        except OSError:
            continue
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            for key, value in zip(names.split()[1:], values.split()[1:], strict=False):
                if key in wanted:
                    found[wanted[key]] = int(value)
    return found


def in_flight(rest_port: int) -> int:
    match = re.search(r":mlsrv:admission:in_flight_requests (\d+)", metrics_page(rest_port))
    return int(match.group(1)) if match else 0


def settle(rest_port: int, limit_s: float = 60.0) -> float:
    """Wait until nothing is in flight; the seconds it took (the step's leftovers)."""
    started = time.monotonic()
    while in_flight(rest_port) and time.monotonic() - started < limit_s:
        time.sleep(0.1)
    return time.monotonic() - started


def run_case(name: str, multiples: list[float], duration: float, scratch: Path,
             server_flags: list[str], pins: tuple[Sequence[str], Sequence[str]] = ((), ()),
             server_src: Path | None = None) -> list[dict[str, Any]]:
    """``pins``: command prefixes for the server and the client (``taskset -c ...``), or none;
    ``server_src``: another checkout's ``src/`` to serve with (an A/B against this tree)."""
    server_pin, client_pin = pins
    kind, protocol, rows = CASES[name]
    base = EXAMPLES / "half_plus_two" if kind == "half_plus_two" else export("mlp", scratch / "mlp")
    model = "half_plus_two" if kind == "half_plus_two" else "mlp"
    monitoring = scratch / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    results = []
    flags = ["--enable_batching", f"--monitoring_config_file={monitoring}", *server_flags]
    with server(model, base, *flags, prefix=server_pin, src=server_src) as (rest, grpc_port, pid):
        target = f"127.0.0.1:{rest if protocol == 'rest' else grpc_port}"
        # the same client (2 processes) as the open-loop steps: on a small host it shares the cores
        capacity = bench(target, protocol, model, rows, duration, "--concurrency", "32", "--workers", "2",
                         prefix=client_pin)["rps"]
        settle(rest)
        rss_at_rest = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024  # type: ignore[union-attr]
        for multiple in multiples:
            rate = multiple * capacity
            tcp_before = tcp_counters()
            with Sampler(pid, rest) as sampler:
                report = bench(target, protocol, model, rows, duration, "--rate", f"{rate:.1f}", "--workers", "2",
                               "--max-in-flight", "100000", prefix=client_pin, warmup="0s")
                leftover_s = settle(rest)
            tcp = {key: value - tcp_before.get(key, 0) for key, value in tcp_counters().items()}
            errors = {f"{e['code']}" + (f"/{e['kind']}" if e["kind"] in ("ClientTimeout", "Cancelled") else ""):
                      e["count"] for e in report["errors"]}
            results.append({
                "case": name, "capacity": capacity, "multiple": multiple, "offered": rate,
                "goodput": report["rps"], "share": report["rps"] / capacity,
                "p50_ms": report["latency"]["p50_ms"], "p99_ms": report["latency"]["p99_ms"],
                "sent": report["requests"]["sent"], "late": report["requests"]["late"],
                "dropped": report["requests"]["dropped"], "errors": errors,
                # cores the client used while sending, and whether it could not keep up (docs/bench-json.md)
                "client_cpu": report["client"]["cpu_s"] / max(report["client"]["wall_s"], 1e-9),
                "client_bound": report["client"]["bound"],
                "peak_rss": sampler.peak_rss, "rss_at_rest": rss_at_rest,
                "probe_p99_ms": sampler.probe_p99_ms(), "leftover_s": leftover_s, "tcp": tcp,
            })
            print(row(results[-1]), file=sys.stderr, flush=True)
    return results


HEADER = ("| case | capacity req/s | offered | goodput req/s | goodput / capacity | p50 ms | p99 ms | errors by code "
          "| client cores | server peak RSS | /healthz p99 ms | drain after step "
          "| connections accepted / listen overflows / SYNs resent (host) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def row(r: dict[str, Any]) -> str:
    errors = ", ".join(f"{code} {count}" for code, count in sorted(r["errors"].items())) or "none"
    counts = r.get("tcp", {})
    tcp = " / ".join(f"{counts[key]:,}" if key in counts else "-"
                     for key in ("accepted", "listen_overflows", "syn_retransmits"))
    return (f"| {r['case']} | {r['capacity']:,.0f} | {r['multiple']:g}x ({r['offered']:,.0f}/s) | {r['goodput']:,.0f} "
            f"| {100 * r['share']:.0f}% | {r['p50_ms']:,.1f} | {r['p99_ms']:,.1f} | {errors} "
            f"| {r['client_cpu']:.2f}{' (bound)' if r['client_bound'] else ''} "
            f"| {r['peak_rss'] / 2**20:,.0f} MiB | {r['probe_p99_ms']:.1f} "
            f"| {r['leftover_s']:.1f} s | {tcp} |")


def plot(results: list[dict[str, Any]], folder: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for case in dict.fromkeys(r["case"] for r in results):
        points = [r for r in results if r["case"] == case]
        axes.plot([r["multiple"] for r in points], [100 * r["share"] for r in points], marker="o", label=case)
    axes.axhline(100, color="grey", linewidth=0.5)
    axes.set_xlabel("offered load (x measured capacity)")
    axes.set_ylabel("goodput (% of capacity)")
    axes.set_ylim(0, 120)
    axes.set_title("mlsrv under open-loop overload")
    axes.legend(fontsize=8)
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "overload-goodput.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--multiples", default="0.5,1,2,3,5")
    parser.add_argument("--plots", type=Path, default=None)
    parser.add_argument("--server-flags", default="", help="extra `mlsrv serve` flags, space-separated")
    parser.add_argument("--server-cpus", default="", help="pin the server to these CPUs (taskset list, e.g. 0)")
    parser.add_argument("--client-cpus", default="", help="pin the load generator to these CPUs (e.g. 1)")
    parser.add_argument("--server-src", type=Path, default=None, help="serve with another checkout's src/ (A/B)")
    args = parser.parse_args()
    pins = (["taskset", "-c", args.server_cpus] if args.server_cpus else [],
            ["taskset", "-c", args.client_cpus] if args.client_cpus else [])
    multiples = [float(m) for m in args.multiples.split(",")]
    print(f"<!-- bench/overload.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{args.duration:g} s per step, server CPUs {args.server_cpus or 'all'}, "
          f"client CPUs {args.client_cpus or 'all'}, server {args.server_src or 'this tree'} -->")
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            results += run_case(name, multiples, args.duration, Path(tmp), args.server_flags.split(), pins,
                                args.server_src)
    print(HEADER)
    print("\n".join(row(r) for r in results))
    if args.plots is not None:
        print(f"\nplot: {plot(results, args.plots)}")


if __name__ == "__main__":
    main()
