"""mlsrv against the reference servers of issue #11, side by side in one run; prints the ratios.

    .venv/bin/python bench/compare.py --duration 10 --plots docs/perf   # ~15 minutes on 2 cores
    .venv/bin/python bench/compare.py --models half_plus_two --rounds 3   # P1 and P3 3 more times, paired

Servers (each a subprocess on free loopback ports, started, measured, stopped one at a time, so no
two share the CPU):
  mlsrv              `mlsrv serve` with batching on (<= 32 rows, 2 ms window, one batch thread: the
                     references' own parameters) and Prometheus metrics, for the mean batch size.
  bare batched REST  bench/reference/bare_rest.py --batch   (aiohttp + orjson + uvloop + micro-batcher)
  bare per-request   bench/reference/bare_rest.py           (the model called on the loop per request)
  naive Flask        bench/reference/naive_flask.py
  bare grpc.aio      bench/reference/bare_grpc.py           (same micro-batcher, official protos)
  canned grpc.aio    bench/reference/bare_grpc.py --canned  (decodes nothing, runs nothing: the ceiling)
  in-process         the model's serving function called in one process with a batch of 32
Models: half_plus_two (bundled), an MLP 784-512-512-10 and MobileNetV2 (224x224x3, random weights),
both exported on the fly. REST load: `hey` (1 s unmeasured warm-up per cell). gRPC load: `h2load`
(C, 32 streams on one connection), so the client is not the bottleneck.

The acceptance ratios (P1-P6) are printed at the end as a Markdown table, with every measured cell
above it; `--plots DIR` writes throughput-vs-p99 PNGs (one per model) from the concurrency sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import (  # noqa: E402
    EXAMPLES,
    MLSRV,
    PYTHON,
    ROOT,
    batch_counts,
    cpu_seconds,
    free_port,
    h2load_grpc,
    hey,
    mean_batch_rows,
    ok_predictions,
    row,
    server,
)

REFERENCE = ROOT / "bench" / "reference"
BATCHING = ("max_batch_size { value: 32 } batch_timeout_micros { value: 2000 } "
            "max_enqueued_batches { value: 1000000 } num_batch_threads { value: 1 }")
EXPORT = """
import sys
import tensorflow as tf
kind, out = sys.argv[1], sys.argv[2]
if kind == "mlp":
    tf.random.set_seed(0)
    weights = [tf.Variable(tf.random.normal([a, b], stddev=0.05)) for a, b in ((784, 512), (512, 512), (512, 10))]
    class M(tf.Module):
        def __init__(self):
            self.w = weights
        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
        def serve(self, x):
            h = tf.nn.relu(tf.nn.relu(x @ self.w[0]) @ self.w[1])
            return {"probabilities": tf.nn.softmax(h @ self.w[2])}
else:  # Keras's own export, as the tutorials do; inputs "keras_tensor", outputs "output_0"
    import keras
    keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).export(out, format="tf_saved_model")
    sys.exit(0)
m = M()
tf.saved_model.save(m, out, signatures={"serving_default": m.serve})
"""
IN_PROCESS = """
import sys, time
import numpy as np, tensorflow as tf
function = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
(name, spec), = function.structured_input_signature[1].items()
batch = tf.constant(np.random.default_rng(0).random((32, *spec.shape[1:]), dtype=np.float32))
function(**{name: batch})
done, started = 0, time.perf_counter()
while time.perf_counter() - started < float(sys.argv[2]):
    function(**{name: batch})
    done += 32
print(done / (time.perf_counter() - started))
"""


class Model:
    def __init__(self, name: str, base: Path, input_name: str, row_shape: tuple[int, ...]) -> None:
        self.name, self.base, self.input_name, self.row_shape = name, base, input_name, row_shape

    @property
    def version_dir(self) -> Path:
        return next(p for p in sorted(self.base.iterdir()) if p.name.isdigit())

    def rest_body(self) -> bytes:
        import numpy as np

        row_data = np.random.default_rng(0).random(self.row_shape, dtype=np.float32) if self.row_shape else 1.0
        rows = [row_data.tolist() if hasattr(row_data, "tolist") else row_data]
        return json.dumps({"instances": rows}).encode()

    def grpc_body(self) -> bytes:
        """One framed gRPC message: a ``PredictRequest`` with one row as ``tensor_content``."""
        import numpy as np
        from tensorflow_serving.apis import predict_pb2

        from mlsrv.protocol import tensor_codec

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.name
        data = np.random.default_rng(0).random((1, *self.row_shape), dtype=np.float32)
        tensor_codec.from_ndarray(data, request.inputs[self.input_name], as_tensor_content=True)
        message = request.SerializeToString()
        return b"\x00" + len(message).to_bytes(4, "big") + message


def export(kind: str, folder: Path) -> Path:
    if not (folder / "1" / "saved_model.pb").exists():
        subprocess.run([PYTHON, "-c", EXPORT, kind, str(folder / "1")], check=True, capture_output=True, timeout=600)
    return folder


@contextmanager
def reference(script: str, model: Model, *flags: str) -> Iterator[tuple[int, int]]:
    """A reference server subprocess; yields (port, pid) once its port accepts connections."""
    port = free_port()
    process = subprocess.Popen([PYTHON, str(REFERENCE / script), "--model-dir", str(model.version_dir),
                                "--port", str(port), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{script} did not start") from None
                time.sleep(0.3)
        time.sleep(1.0)  # the port opens before a batcher task or the first model call is ready
        yield port, process.pid
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def in_process_rate(model: Model, duration: float) -> float:
    done = subprocess.run([PYTHON, "-c", IN_PROCESS, str(model.version_dir), str(duration)], capture_output=True,
                          text=True, check=True, timeout=duration + 300)
    return float(done.stdout.strip().splitlines()[-1])


def help_wall_time(runs: int = 9) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([*MLSRV, "--help"], capture_output=True, check=True, timeout=60)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class Run:
    """Every measured cell of this run, keyed by (model, server, protocol, concurrency)."""

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.cells: dict[tuple[str, str, str, int], dict[str, float]] = {}
        self.lines: list[str] = ["| model | server | protocol | concurrency | req/s | p50 ms | p99 ms | errors "
                                 "| mean batch | server CPU/req |", "|---|---|---|---|---|---|---|---|---|---|"]

    def record(self, model: str, name: str, protocol: str, concurrency: int, result: dict[str, float],
               batch: float = float("nan"), cpu_per_request_us: float = float("nan")) -> None:
        self.cells[(model, name, protocol, concurrency)] = {**result, "batch": batch, "cpu_us": cpu_per_request_us}
        self.lines.append(row(model, name, protocol, concurrency, result["rps"], result["p50_ms"], result["p99_ms"],
                              int(result.get("errors", 0)), batch,
                              "" if cpu_per_request_us != cpu_per_request_us else f"{cpu_per_request_us:.0f} µs"))
        print(self.lines[-1], file=sys.stderr, flush=True)

    def rest_sweep(self, model: Model, name: str, port: int, pid: int, concurrencies: list[int],
                   metrics_port: int | None = None) -> None:
        url = f"http://127.0.0.1:{port}/v1/models/{model.name}:predict"
        body = model.rest_body()
        for c in concurrencies:
            batches_before = batch_counts(metrics_port) if metrics_port is not None else (0, 0)
            before = cpu_seconds(pid)
            result = hey(url, body, c, self.duration)
            used = cpu_seconds(pid) - before  # includes hey's warm-up second: an upper bound
            batch = mean_batch_rows(metrics_port, batches_before) if metrics_port is not None else float("nan")
            requests = result["rps"] * (self.duration + 1)
            self.record(model.name, name, "REST", c, result, batch, 1e6 * used / max(1.0, requests))

    def grpc_cell(self, model: Model, name: str, port: int, pid: int, scratch: Path,
                  metrics_port: int | None = None, streams: int = 32) -> None:
        body = scratch / f"{model.name}.grpc"
        body.write_bytes(model.grpc_body())
        probe_grpc(port, model)  # h2load sees HTTP status only: check once that calls succeed
        for warm_up_s in (1, 2, 4, 8):  # not measured; a model's first batches may take more than a second
            try:
                h2load_grpc(port, body, streams, warm_up_s)
                break
            except RuntimeError:  # no call completed in time (MobileNetV2 on a busy machine)
                continue
        batches_before = batch_counts(metrics_port) if metrics_port is not None else (0, 0)
        before, ok_before = cpu_seconds(pid), ok_predictions(metrics_port, model.name) if metrics_port else 0
        result = h2load_grpc(port, body, streams, self.duration)
        used = cpu_seconds(pid) - before
        result["errors"] = result["http_errors"]
        if metrics_port is not None:  # the server's own count of successful calls
            failed = result["requests"] - (ok_predictions(metrics_port, model.name) - ok_before)
            result["errors"] += max(0, failed)
        batch = mean_batch_rows(metrics_port, batches_before) if metrics_port is not None else float("nan")
        self.record(model.name, name, "gRPC", streams, result, batch, 1e6 * used / max(1, result["requests"]))

    def rps(self, model: str, name: str, protocol: str, concurrency: int) -> float:
        cell = self.cells.get((model, name, protocol, concurrency))
        return cell["rps"] if cell else float("nan")

    def p50(self, model: str, name: str, concurrency: int) -> float:
        cell = self.cells.get((model, name, "REST", concurrency))
        return cell["p50_ms"] if cell else float("nan")


def probe_grpc(port: int, model: Model) -> None:
    """One Predict call with the official stub; raises if the server does not answer it correctly."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.ParseFromString(model.grpc_body()[5:])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    if not reply.outputs:
        raise RuntimeError(f"gRPC probe of {model.name} on port {port}: no outputs")


def serving_flags(scratch: Path) -> list[str]:
    """`mlsrv serve` flags for every mlsrv cell: the references' batching parameters, metrics on."""
    params = scratch / "batching.txt"
    params.write_text(BATCHING)
    monitoring = scratch / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    return ["--enable_batching", f"--batching_parameters_file={params}", f"--monitoring_config_file={monitoring}"]


def all_models(scratch: Path, keys: list[str]) -> dict[str, Model]:
    """The models asked for (the MLP and MobileNetV2 exported into ``scratch`` on first use)."""
    makers = {
        "half_plus_two": lambda: Model("half_plus_two", EXAMPLES / "half_plus_two", "x", ()),
        "mlp": lambda: Model("mlp", export("mlp", scratch / "mlp"), "x", (784,)),
        "mobilenet": lambda: Model("mobilenet", export("mobilenet", scratch / "mobilenet"), "keras_tensor",
                                   (224, 224, 3)),
    }
    return {key: makers[key]() for key in keys}


def measure(args: argparse.Namespace, scratch: Path) -> Run:
    run = Run(args.duration)
    mlsrv_flags = serving_flags(scratch)
    models = all_models(scratch, args.models.split(","))
    sweeps = {"half_plus_two": [1, 8, 32, 64], "mlp": [1, 8, 32, 64], "mobilenet": [1, 8, 32]}
    for key in args.models.split(","):
        model, sweep = models[key], sweeps[key]
        with server(model.name, model.base, *mlsrv_flags) as (rest, grpc_port, pid):
            run.rest_sweep(model, "mlsrv", rest, pid, sweep, metrics_port=rest)
            if key != "mlp":
                run.grpc_cell(model, "mlsrv", grpc_port, pid, scratch, metrics_port=rest)
        with reference("bare_rest.py", model, "--batch") as (port, pid):
            run.rest_sweep(model, "bare batched REST", port, pid, sweep)
        with reference("bare_rest.py", model) as (port, pid):
            run.rest_sweep(model, "bare per-request REST", port, pid, sweep)
        if key == "half_plus_two":
            with reference("naive_flask.py", model) as (port, pid):
                run.rest_sweep(model, "naive Flask", port, pid, [1, 32])
        if key != "mlp":
            with reference("bare_grpc.py", model) as (port, pid):
                run.grpc_cell(model, "bare grpc.aio", port, pid, scratch)
        if key == "half_plus_two":
            with reference("bare_grpc.py", model, "--canned") as (port, pid):
                run.grpc_cell(model, "canned grpc.aio", port, pid, scratch)
        if key == "mobilenet":
            rate = in_process_rate(model, args.duration)
            run.record(model.name, "in-process batch 32", "-", 32, {"rps": rate, "p50_ms": float("nan"),
                                                                    "p99_ms": float("nan")})
    return run


def paired_rounds(args: argparse.Namespace, scratch: Path) -> list[str]:
    """P1 (mlsrv vs bare batched REST, c=32) and P3 (mlsrv vs canned grpc.aio) ``--rounds`` times
    more, each pair measured back to back, the order alternating: on a shared machine whose speed
    drifts between cells, the median ratio and its range say more than one run's ratio."""
    flags = serving_flags(scratch)
    keys = [key for key in ("half_plus_two", "mlp") if key in args.models.split(",")]
    models = all_models(scratch, keys)
    pairs = [(f"P1 {key} REST c=32", models[key], "REST", "bare_rest.py", "--batch", "≥ 1.0×") for key in keys]
    if "half_plus_two" in models:
        pairs.append(("P3 half_plus_two gRPC c=32", models["half_plus_two"], "gRPC", "bare_grpc.py", "--canned",
                      "≥ 0.8×"))
    lines = ["| case | median ratio | range | rounds (mlsrv / reference req/s) | bar |", "|---|---|---|---|---|"]
    for case, model, protocol, script, flag, bar in pairs:
        ratios, cells = [], []
        for round_ in range(args.rounds):
            run = Run(args.duration)
            for side in ("mlsrv", "reference") if round_ % 2 == 0 else ("reference", "mlsrv"):
                if side == "mlsrv":
                    with server(model.name, model.base, *flags) as (rest, grpc_port, pid):
                        if protocol == "REST":
                            run.rest_sweep(model, side, rest, pid, [32], metrics_port=rest)
                        else:
                            run.grpc_cell(model, side, grpc_port, pid, scratch, metrics_port=rest)
                else:
                    with reference(script, model, flag) as (port, pid):
                        if protocol == "REST":
                            run.rest_sweep(model, side, port, pid, [32])
                        else:
                            run.grpc_cell(model, side, port, pid, scratch)
            ours, theirs = run.rps(model.name, "mlsrv", protocol, 32), run.rps(model.name, "reference", protocol, 32)
            ratios.append(ours / theirs)
            cells.append(f"{ours:,.0f} / {theirs:,.0f}")
        lines.append(row(case, f"{statistics.median(ratios):.2f}×", f"{min(ratios):.2f}-{max(ratios):.2f}×",
                         "; ".join(cells), bar))
    return lines


def acceptance(run: Run, help_s: float) -> list[str]:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}×" if b == b and a == a and b else "n/a"

    hpt, mlp, img = "half_plus_two", "mlp", "mobilenet"
    mine = {m: run.rps(m, "mlsrv", "REST", 32) for m in (hpt, mlp, img)}
    rows = [
        ("P1 half_plus_two REST c=32 req/s", mine[hpt], "bare batched REST",
         run.rps(hpt, "bare batched REST", "REST", 32), "≥ 1.0×"),
        ("P1 half_plus_two REST c=32 req/s", mine[hpt], "naive Flask",
         run.rps(hpt, "naive Flask", "REST", 32), "≥ 25×"),
        ("P1 MLP REST c=32 req/s", mine[mlp], "bare batched REST", run.rps(mlp, "bare batched REST", "REST", 32),
         "≥ 1.0×"),
        ("P2 half_plus_two REST c=1 p50 ms (lower is better)", run.p50(hpt, "mlsrv", 1), "bare per-request REST",
         run.p50(hpt, "bare per-request REST", 1), "≤ 1.2×"),
        ("P3 half_plus_two gRPC c=32 req/s", run.rps(hpt, "mlsrv", "gRPC", 32), "canned grpc.aio",
         run.rps(hpt, "canned grpc.aio", "gRPC", 32), "≥ 0.8×"),
        ("P3 (info) half_plus_two gRPC c=32 req/s", run.rps(hpt, "mlsrv", "gRPC", 32), "bare grpc.aio",
         run.rps(hpt, "bare grpc.aio", "gRPC", 32), "-"),
        ("P4 MobileNetV2 REST JSON c=32 img/s", mine[img], "bare batched REST",
         run.rps(img, "bare batched REST", "REST", 32), "≥ 2×"),
        ("P5 MobileNetV2 gRPC c=32 img/s", run.rps(img, "mlsrv", "gRPC", 32), "in-process batch 32",
         run.rps(img, "in-process batch 32", "-", 32), "≥ 0.9×"),
    ]
    lines = ["| case | mlsrv | reference | reference value | ratio | bar |", "|---|---|---|---|---|---|"]
    for case, ours, ref_name, ref, bar in rows:
        lines.append(row(case, ours, ref_name, ref, ratio(ours, ref), bar))
    lines.append(row("P6 `mlsrv --help` wall time s (median of 9)", f"{help_s:.3f}", "-", "-", "-", "< 0.3 s"))
    return lines


def plot(run: Run, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    folder.mkdir(parents=True, exist_ok=True)
    for model in sorted({key[0] for key in run.cells}):
        figure, axes = plt.subplots(figsize=(6, 4))
        servers = sorted({key[1] for key in run.cells if key[0] == model and key[2] == "REST"})
        for name in servers:
            points = sorted((c, cell) for (m, s, p, c), cell in run.cells.items()
                            if m == model and s == name and p == "REST")
            axes.plot([cell["rps"] for _, cell in points], [cell["p99_ms"] for _, cell in points], marker="o",
                      label=name)
            for c, cell in points:
                axes.annotate(f"c={c}", (cell["rps"], cell["p99_ms"]), fontsize=7)
        axes.set_xlabel("requests/s")
        axes.set_ylabel("p99 latency (ms)")
        axes.set_yscale("log")
        axes.set_title(f"{model}, REST (hey), {run.duration:g} s per point")
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = folder / f"throughput-p99-{model}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured cell")
    parser.add_argument("--models", default="half_plus_two,mlp,mobilenet")
    parser.add_argument("--plots", type=Path, default=None, help="write throughput-vs-p99 PNGs here")
    parser.add_argument("--rounds", type=int, default=0,
                        help="then measure P1 and P3 this many more times, each pair back to back")
    args = parser.parse_args()
    print(f"<!-- bench/compare.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
          f"{args.duration:g} s per cell -->")
    with tempfile.TemporaryDirectory() as tmp:
        run = measure(args, Path(tmp))
        rounds = paired_rounds(args, Path(tmp)) if args.rounds > 0 else []
    help_s = help_wall_time()
    print("\n".join(run.lines))
    print()
    print("\n".join(acceptance(run, help_s)))
    if rounds:
        print()
        print("\n".join(rounds))
    if args.plots is not None:
        for path in plot(run, args.plots):
            print(f"\nplot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
