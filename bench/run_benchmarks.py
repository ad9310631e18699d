"""Run mlsrv's benchmark suite and print Markdown tables for docs/benchmarks.md.

Every number of one section comes from one run of this script on one machine, so compare ratios
within a section, not across machines. Servers and load generators share the machine's cores; the
tables say which client made each number.

    .venv/bin/python bench/run_benchmarks.py --duration 10 --sections rest,grpc,batching,validate

Sections:
  rest      REST requests/s and p50/p99 at concurrency 1 and 32 on half_plus_two, measured with `hey`.
  grpc      gRPC at concurrency 1 and 32 on half_plus_two and a 1x224x224x3 float image model, measured
            with bench/grpc_load.py (raw official stubs) and `mlsrv bench`; REST `hey` numbers beside them.
  batching  concurrency 32 on half_plus_two and the MLP example, batching off vs on, REST and gRPC.
  validate  `mlsrv bench` vs `hey` at concurrency 32 on half_plus_two over REST (same server, back to back).
  lone      REST half_plus_two at concurrency 1 and 32, batching off/on (2 ms window), this tree and, with
            --before-src, another checkout's src/ in the same run: what batching costs a lone request.
  ceiling   gRPC half_plus_two with a C client (`h2load`, 32 streams on one connection), so the server is the
            bottleneck: a canned `grpc.aio` servicer (the framework alone), mlsrv without and with batching,
            and the server's CPU per request. Bounds what batching can gain on gRPC here.
`hey` and `h2load` come from Debian (`apt-get install hey nghttp2-client`); the script installs them when
missing and it can.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "models"
PYTHON = sys.executable
MLSRV = [PYTHON, "-m", "mlsrv.cli"]
BATCHING = "max_batch_size { value: 64 } batch_timeout_micros { value: 500 } " \
           "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(name: str, base_path: Path, *extra: str, src: Path | None = None,
           prefix: Sequence[str] = (), python: str = PYTHON) -> Iterator[tuple[int, int, int]]:
    """A `mlsrv serve` subprocess on free loopback ports; yields (rest_port, grpc_port, pid).

    ``src``: run another checkout's ``src/`` (PYTHONPATH) instead of the installed mlsrv.
    ``prefix``: a command to run it under (``taskset -c 0`` pins it to CPU 0; it execs, so pid is the server's).
    ``python``: the interpreter (another venv's, with mlsrv's dependencies installed).
    """
    rest, grpc_port = free_port(), free_port()
    while grpc_port == rest:  # the kernel can hand the same free port to two binds in a row
        grpc_port = free_port()
    command = [*prefix, python, "-m", "mlsrv.cli", "serve", "--host=127.0.0.1", f"--port={grpc_port}",
               f"--rest_api_port={rest}", f"--model_name={name}", f"--model_base_path={base_path}", *extra]
    log = open(tempfile.mktemp(prefix="mlsrv-bench-", suffix=".log"), "w")  # noqa: SIM115
    env = {**os.environ, "PYTHONPATH": str(src.resolve())} if src is not None else None
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{rest}/v1/models/{name}", timeout=2) as reply:
                    if b"AVAILABLE" in reply.read():
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log.name}")
            time.sleep(0.3)
        yield rest, grpc_port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def ensure_tool(command: str, package: str) -> str:
    found = shutil.which(command)
    if found:
        return found
    subprocess.run(["apt-get", "install", "-y", package], check=False, capture_output=True)
    found = shutil.which(command)
    if not found:
        sys.exit(f"{command} is not installed and could not be installed (apt-get install {package})")
    return found


def ensure_hey() -> str:
    return ensure_tool("hey", "hey")


def hey(url: str, body: bytes, concurrency: int, duration: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        handle.write(body)
    try:
        # one unmeasured second first, so connections and caches are warm (mlsrv bench gets --warmup too)
        subprocess.run([ensure_hey(), "-z", "1s", "-c", str(concurrency), "-m", "POST", "-D", handle.name,
                        "-T", "application/json", url], capture_output=True, check=True)
        result = subprocess.run(
            [ensure_hey(), "-z", f"{duration}s", "-c", str(concurrency), "-m", "POST", "-D", handle.name,
             "-T", "application/json", url], capture_output=True, text=True, check=True)
    finally:
        os.unlink(handle.name)
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: int) -> float:
        match = re.search(rf"\s{p}% in ([\d.]+) secs", out)
        return float(match.group(1)) * 1000 if match else float("nan")

    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    errors = sum(int(n) for code, n in codes.items() if code != "200")
    return {"rps": rps, "p50_ms": pct(50), "p99_ms": pct(99), "errors": errors}


def mlsrv_bench(target: str, protocol: str, model: str, concurrency: int, duration: float,
                *extra: str) -> dict[str, float]:
    result = subprocess.run(
        [*MLSRV, "bench", "--target", target, "--protocol", protocol, "--model", model,
         "--concurrency", str(concurrency), "--duration", f"{duration}s", "--warmup", "1s", "--json", *extra],
        capture_output=True, text=True, timeout=duration + 180)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    report = json.loads(result.stdout)
    return {"rps": report["rps"], "p50_ms": report["latency"]["p50_ms"], "p99_ms": report["latency"]["p99_ms"],
            "errors": report["requests"]["errors"], "client_cpu": 100 * report["client"]["cpu_fraction"]}


def grpc_load(target: str, model: str, input_name: str, shape: str, concurrency: int,
              duration: float) -> dict[str, float]:
    result = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "grpc_load.py"), "--target", target, "--model", model, "--input", input_name,
         "--shape", shape, "-c", str(concurrency), "-d", str(duration)],
        capture_output=True, text=True, timeout=duration + 120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def row(*cells: Any) -> str:
    return "| " + " | ".join(f"{c:,.1f}" if isinstance(c, float) else str(c) for c in cells) + " |"


def image_model(folder: Path) -> Path:
    """A 1x224x224x3 float input model (per-image channel means), exported once into ``folder``."""
    script = f"""
import tensorflow as tf
class M(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image")])
    def serve(self, image):
        return {{"mean": tf.reduce_mean(image, axis=[1, 2])}}
m = M()
tf.saved_model.save(m, "{folder / '1'}", signatures={{"serving_default": m.serve}})
"""
    if not (folder / "1" / "saved_model.pb").exists():
        subprocess.run([PYTHON, "-c", script], check=True, capture_output=True)
    return folder


def image_body(batch: int = 1) -> bytes:
    import numpy as np

    data = np.random.default_rng(0).random((batch, 224, 224, 3), dtype=np.float32)
    return json.dumps({"instances": data.tolist()}).encode()


def section_rest(duration: float) -> list[str]:
    lines = ["### REST, half_plus_two, no batching (client: hey)", "",
             "| concurrency | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    body = b'{"instances": [[1.0]]}'
    with server("half_plus_two", EXAMPLES / "half_plus_two") as (rest, _, _):
        for c in (1, 32):
            r = hey(f"http://127.0.0.1:{rest}/v1/models/half_plus_two:predict", body, c, duration)
            lines.append(row(c, r["rps"], r["p50_ms"], r["p99_ms"], int(r["errors"])))
    return lines


def section_grpc(duration: float, scratch: Path) -> list[str]:
    lines = ["### gRPC vs REST, no batching", "",
             "| model | protocol (client) | concurrency | requests/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    cases = [("half_plus_two", EXAMPLES / "half_plus_two", "x", "1,1", b'{"instances": [[1.0]]}'),
             ("image", image_model(scratch / "image"), "image", "1,224,224,3", image_body())]
    for name, path, input_name, shape, body in cases:
        with server(name, path) as (rest, grpc_port, _):
            target = f"127.0.0.1:{grpc_port}"
            for c in (1, 32):
                r = grpc_load(target, name, input_name, shape, c, duration)
                lines.append(row(name, "gRPC (grpc_load.py)", c, r["rps"], r["p50_ms"], r["p99_ms"], r["errors"]))
                r = mlsrv_bench(target, "grpc", name, c, duration)
                lines.append(row(name, "gRPC (mlsrv bench)", c, r["rps"], r["p50_ms"], r["p99_ms"], int(r["errors"])))
                r = hey(f"http://127.0.0.1:{rest}/v1/models/{name}:predict", body, c, duration)
                lines.append(row(name, "REST (hey)", c, r["rps"], r["p50_ms"], r["p99_ms"], int(r["errors"])))
    return lines


def section_batching(duration: float, scratch: Path) -> list[str]:
    params = scratch / "batching.txt"
    params.write_text(BATCHING)
    lines = ["### Batching at concurrency 32", "", f"Batching parameters: `{BATCHING}`", "",
             "| model | protocol (client) | batching | requests/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    cases = [("half_plus_two", EXAMPLES / "half_plus_two", "x", "1,1", b'{"instances": [[1.0]]}'),
             ("mlp", EXAMPLES / "mlp_classifier", "x", "1,4", b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}')]
    for name, path, input_name, shape, body in cases:
        for batching in (False, True):
            flags = ["--enable_batching", f"--batching_parameters_file={params}"] if batching else []
            with server(name, path, *flags) as (rest, grpc_port, _):
                r = grpc_load(f"127.0.0.1:{grpc_port}", name, input_name, shape, 32, duration)
                lines.append(row(name, "gRPC (grpc_load.py)", "on" if batching else "off", r["rps"], r["p50_ms"],
                                 r["p99_ms"], r["errors"]))
                r = hey(f"http://127.0.0.1:{rest}/v1/models/{name}:predict", body, 32, duration)
                lines.append(row(name, "REST (hey)", "on" if batching else "off", r["rps"], r["p50_ms"],
                                 r["p99_ms"], int(r["errors"])))
    return lines


LONE_BATCHING = "max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } " \
                "max_enqueued_batches { value: 1000 } num_batch_threads { value: 1 }"


def section_lone(duration: float, scratch: Path, before_src: Path | None) -> list[str]:
    params = scratch / "lone_batching.txt"
    params.write_text(LONE_BATCHING)
    lines = ["### Batching and a lone request (REST, half_plus_two, `hey`)", "",
             f"Batching parameters: `{LONE_BATCHING}`", "",
             "| tree | batching | concurrency | requests/s | p50 ms | p99 ms | errors |",
             "|---|---|---|---|---|---|---|"]
    body = b'{"instances": [[1.0]]}'
    trees: list[tuple[str, Path | None]] = [("before", before_src)] if before_src is not None else []
    trees.append(("this tree", None))
    for tree, src in trees:
        for batching in (False, True):
            flags = ["--enable_batching", f"--batching_parameters_file={params}"] if batching else []
            with server("half_plus_two", EXAMPLES / "half_plus_two", *flags, src=src) as (rest, _, _):
                url = f"http://127.0.0.1:{rest}/v1/models/half_plus_two:predict"
                for concurrency in (1, 32):
                    r = hey(url, body, concurrency, duration)
                    lines.append(row(tree, "on" if batching else "off", concurrency, r["rps"], r["p50_ms"],
                                     r["p99_ms"], int(r["errors"])))
    return lines


def section_validate(duration: float) -> list[str]:
    lines = ["### `mlsrv bench` vs `hey`, REST, half_plus_two, concurrency 32", "",
             "| client | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    body = b'{"instances": [[1.0]]}'
    with server("half_plus_two", EXAMPLES / "half_plus_two") as (rest, _, _):
        url = f"http://127.0.0.1:{rest}/v1/models/half_plus_two:predict"
        first = hey(url, body, 32, duration)
        ours = mlsrv_bench(f"127.0.0.1:{rest}", "rest", "half_plus_two", 32, duration)
        second = hey(url, body, 32, duration)
    mean = {k: (first[k] + second[k]) / 2 for k in ("rps", "p50_ms", "p99_ms")}
    lines.append(row("hey (before)", first["rps"], first["p50_ms"], first["p99_ms"], int(first["errors"])))
    lines.append(row("mlsrv bench", ours["rps"], ours["p50_ms"], ours["p99_ms"], int(ours["errors"])))
    lines.append(row("hey (after)", second["rps"], second["p50_ms"], second["p99_ms"], int(second["errors"])))
    lines += ["", f"mlsrv bench / hey mean: requests/s {ours['rps'] / mean['rps']:.2f}, "
                  f"p50 {ours['p50_ms'] / mean['p50_ms']:.2f}; mlsrv bench client CPU {ours['client_cpu']:.0f}%"]
    return lines


def cpu_times(pid: int, tid: int | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds a process, or one of its threads, has used so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def minor_faults(pid: int) -> int:
    """Page faults a process has taken without I/O so far: memory it touched for the first time (Linux /proc)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    return sum(cpu_times(pid))


def grpc_predict_body(model: str, input_name: str, value: float) -> bytes:
    """One gRPC message on the wire: a 5-byte frame header and a serialized ``PredictRequest``."""
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from mlsrv.protocol import tensor_codec

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    tensor_codec.from_ndarray(np.array([[value]], np.float32), request.inputs[input_name], as_tensor_content=True)
    data = request.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


def h2load_grpc(port: int, body: Path, streams: int, duration: float) -> dict[str, float]:
    """Unary Predict calls from h2load over one HTTP/2 connection, ``streams`` in flight.

    h2load reads HTTP status only, not the ``grpc-status`` trailer: callers count gRPC errors on the
    server (its request_count metric). Latencies come from h2load's per-request log.
    """
    import numpy as np

    url = f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"
    common = [ensure_tool("h2load", "nghttp2-client"), "-c", "1", "-m", str(streams), "-d", str(body),
              "-H", "content-type: application/grpc", "-H", "te: trailers"]
    log = body.with_suffix(".log")
    log.unlink(missing_ok=True)  # h2load appends to an existing log
    done = subprocess.run([*common, "-D", f"{duration:g}", f"--log-file={log}", url], capture_output=True,
                          check=True, timeout=duration + 60, text=True)
    rows = [line.split("\t") for line in log.read_text().splitlines() if line] if log.exists() else []
    if not rows:
        raise RuntimeError(f"h2load completed no request:\n{done.stdout[-2000:]}")
    ok = [int(r[2]) for r in rows if r[1] == "200"]
    micros = np.array(ok, dtype=np.float64)
    return {"requests": len(rows), "http_errors": len(rows) - len(ok), "rps": len(ok) / duration,
            "p50_ms": float(np.percentile(micros, 50)) / 1000, "p99_ms": float(np.percentile(micros, 99)) / 1000}


def metrics_page(rest_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=10) as reply:
        return str(reply.read().decode())


def batch_counts(rest_port: int) -> tuple[int, int]:
    """(batches, rows) the server has run so far, from TF's padding_size histogram (one count per batch)."""
    counts = re.findall(r'padding_size_count\{execution_batch_size="(\d+)"\} (\d+)', metrics_page(rest_port))
    return sum(int(n) for _, n in counts), sum(int(size) * int(n) for size, n in counts)


def mean_batch_rows(rest_port: int, since: tuple[int, int] = (0, 0)) -> float:
    """Mean executed batch size since ``since`` (an earlier :func:`batch_counts`), NaN without batches."""
    batches, rows = batch_counts(rest_port)
    return (rows - since[1]) / (batches - since[0]) if batches > since[0] else float("nan")


def ok_predictions(rest_port: int, model: str) -> int:
    """The server's count of successful requests for ``model`` (TF Serving's request_count metric)."""
    text = metrics_page(rest_port)
    pattern = rf':tensorflow:serving:request_count{{model_name="{model}",status="OK"}} (\d+)'
    match = re.search(pattern, text)
    return int(match.group(1)) if match else 0


def section_ceiling(duration: float, scratch: Path) -> list[str]:
    monitoring = scratch / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    params = scratch / "batching.txt"
    params.write_text(BATCHING)
    body = scratch / "predict.grpc"
    body.write_bytes(grpc_predict_body("half_plus_two", "x", 1.0))
    lines = ["### gRPC, server-bound: half_plus_two, 32 streams from h2load (a C client)", "",
             "| server | requests/s | p50 ms | p99 ms | gRPC errors | server CPU per request |",
             "|---|---|---|---|---|---|"]
    port = free_port()
    canned = subprocess.Popen([PYTHON, str(ROOT / "bench" / "reference" / "bare_grpc.py"), "--canned", "--port",
                               str(port), "--model-dir", str(EXAMPLES / "half_plus_two" / "00000123")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if canned.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("canned server did not start") from None
                time.sleep(0.3)
        h2load_grpc(port, body, 32, 1)  # warm-up, not measured
        before = cpu_seconds(canned.pid)
        r = h2load_grpc(port, body, 32, duration)
        used = cpu_seconds(canned.pid) - before
        lines.append(row("canned grpc.aio servicer (no decoding, no model)", r["rps"], r["p50_ms"], r["p99_ms"],
                         "n/a", f"{1e6 * used / max(1, r['requests']):.0f} µs"))
        ceiling = r["rps"]
    finally:
        canned.terminate()
        canned.wait(30)
    results = {}
    batch_rows = float("nan")
    for batching in (False, True):
        flags = [f"--monitoring_config_file={monitoring}"]
        if batching:
            flags += ["--enable_batching", f"--batching_parameters_file={params}"]
        with server("half_plus_two", EXAMPLES / "half_plus_two", *flags) as (rest, grpc_port, pid):
            h2load_grpc(grpc_port, body, 32, 1)  # warm-up, not measured
            before, ok_before = cpu_seconds(pid), ok_predictions(rest, "half_plus_two")
            r = h2load_grpc(grpc_port, body, 32, duration)
            used = cpu_seconds(pid) - before
            errors = r["requests"] - (ok_predictions(rest, "half_plus_two") - ok_before) + r["http_errors"]
            lines.append(row(f"mlsrv, batching {'on' if batching else 'off'}", r["rps"], r["p50_ms"], r["p99_ms"],
                             max(0, int(errors)), f"{1e6 * used / max(1, r['requests']):.0f} µs"))
            results[batching] = r["rps"]
            if batching:
                batch_rows = mean_batch_rows(rest)
    lines += ["", f"batching on / off: {results[True] / results[False]:.2f}×; "
                  f"canned framework / mlsrv without batching: {ceiling / results[False]:.2f}× "
                  f"(the most any batching could gain on this path); mean batch size {batch_rows:.1f} rows"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="mlsrv benchmark suite")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--sections", default="rest,grpc,batching,validate")
    parser.add_argument("--before-src", type=Path, default=None, help="another checkout's src/, for `lone`")
    args = parser.parse_args()
    print(f"<!-- {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"duration {args.duration}s per cell -->")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in args.sections.split(","):
            lines = {"rest": lambda: section_rest(args.duration),
                     "grpc": lambda: section_grpc(args.duration, scratch),
                     "batching": lambda: section_batching(args.duration, scratch),
                     "validate": lambda: section_validate(args.duration),
                     "ceiling": lambda: section_ceiling(args.duration, scratch),
                     "lone": lambda: section_lone(args.duration, scratch, args.before_src)}[name]()
            print("\n".join(lines) + "\n", flush=True)


if __name__ == "__main__":
    main()
