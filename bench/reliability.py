"""Replay the hardening issue's attacks against a live `mlsrv serve` and print what each cost everyone else.

    .venv/bin/python bench/reliability.py              # every case, ~3 minutes
    .venv/bin/python bench/reliability.py --cases regex,grpc-leak

For each case it prints: requests sent, answers by code, the longest wait of a concurrent `/healthz`
probe (a fresh connection every 20 ms: how long the server stopped answering other clients), and the
server's memory before and after (RSS of the server and its worker processes; the peak is the main
process's `VmHWM`). The Markdown table goes into docs/reliability.md with the command that made it.

The server runs as a subprocess on free loopback ports with default limits, on TF Serving's own
half_plus_two (`../shared/testdata/tfserving/saved_model_half_plus_two_cpu`) when present, else the
bundled example. Every loop is bounded in count and time; nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import json
import os
import resource
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from run_benchmarks import EXAMPLES, MLSRV, ROOT, free_port  # bench/ is on sys.path: scripts run from there

REFERENCE = ROOT.parent / "shared" / "testdata" / "tfserving" / "saved_model_half_plus_two_cpu"
EXAMPLE = EXAMPLES / "half_plus_two"
MIB = 1 << 20


# -- the server under test ----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    rest: int
    grpc: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    def pids(self) -> list[int]:
        """The server and its children (the REST codec workers)."""
        pids = [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            children = []
        return pids + [int(pid) for pid in children]

    def rss(self) -> int:
        return sum(_status(pid, "VmRSS") for pid in self.pids())

    def peak(self) -> int:
        return _status(self.process.pid, "VmHWM")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size


def _status(pid: int, name: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@contextmanager
def serving(model: Path, *flags: str, nofile: int | None = None) -> Iterator[Server]:
    rest, grpc_port = free_port(), free_port()
    log_path = Path(tempfile.mkstemp(prefix="mlsrv-reliability-", suffix=".log")[1])

    def limit_descriptors() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*MLSRV, "serve", "--host=127.0.0.1", f"--port={grpc_port}", f"--rest_api_port={rest}",
             "--model_name=m", f"--model_base_path={model}", *flags],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=limit_descriptors,
        )
    server = Server(process, rest, grpc_port, log_path)
    try:
        deadline = time.monotonic() + 120
        while http(rest, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 2)[0] != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text()[-2000:])
            time.sleep(0.2)
        time.sleep(1.5)  # the REST codec worker starts in the background
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log_path.unlink(missing_ok=True)


def http(port: int, request: bytes, timeout: float) -> tuple[int, bytes]:
    """Raw HTTP/1.1 on a fresh connection: (status, body); 0 on failure or timeout."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            data = bytearray()
            while time.monotonic() < deadline:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
                head, sep, body = bytes(data).partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if sep and length and len(body) >= length[0]:
                    break
    except OSError:
        return 0, b""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    return (int(parts[1]), body) if len(parts) > 1 and parts[1].isdigit() else (0, b"")


def post(port: int, path: str, body: bytes, timeout: float = 120) -> int:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return http(port, head.encode() + body, timeout)[0]


class Probe:
    """GET /healthz every 20 ms on a fresh connection.

    ``worst`` is the longest wait for an answer of any status (how long the server stopped
    answering); ``not_ok`` counts answers other than 200 (e.g. 503 past the connection cap) and
    ``unanswered`` probes that got nothing within 30 s (counted as a 30 s wait).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.worst = 0.0
        self.count = 0
        self.not_ok = 0
        self.unanswered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.count < 100_000:
            started = time.monotonic()
            status, _ = http(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 30)
            waited = time.monotonic() - started if status else 30.0
            self.count += 1
            self.unanswered += status == 0
            self.not_ok += status not in (0, 200)
            self.worst = max(self.worst, waited)
            self._stop.wait(0.02)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(40)


@dataclass
class Result:
    case: str
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    worst_probe_s: float = 0.0
    probes: int = 0
    probe_not_ok: int = 0
    probe_unanswered: int = 0
    rss_before: int = 0
    rss_after: int = 0
    peak_growth: int = 0
    note: str = ""


def measure(server: Server, case: str, attack: Callable[[Result], None]) -> Result:
    result = Result(case)
    result.rss_before, peak_before = server.rss(), server.peak()
    with Probe(server.rest) as probe:
        attack(result)
        time.sleep(0.5)  # the probe sees the server after the attack too
    result.worst_probe_s, result.probes = probe.worst, probe.count
    result.probe_not_ok, result.probe_unanswered = probe.not_ok, probe.unanswered
    result.rss_after, result.peak_growth = server.rss(), server.peak() - peak_before
    return result


# -- the cases ----------------------------------------------------------------------------------------


def _grpc() -> Any:
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    return grpc, predict_pb2, prediction_service_pb2_grpc


def case_regex(server: Server) -> Result:
    """Item 1: an input TF's message repeats (85 KB and 171 KB bodies froze the server 9-50 s)."""

    def attack(result: Result) -> None:
        for newlines in (64_000, 64_000, 128_000, 128_000, 1_000_000):
            example = base64.b64encode(b"\n" * newlines).decode()
            body = json.dumps({"signature_name": "classify_x_to_y", "instances": [{"b64": example}]}).encode()
            result.sent += 1
            result.answers[str(post(server.rest, "/v1/models/m:predict", body))] += 1

    return measure(server, "1. message quoting a huge input (REST, up to 1.3 MB)", attack)


def case_grpc_leak(server: Server) -> Result:
    """Item 2: 200 failing 7.6 MB Predict requests (RSS went 588 MB -> 2.9 GB)."""
    grpc, predict_pb2, stubs = _grpc()

    def request(model: str, rows: int) -> Any:
        pb = predict_pb2.PredictRequest()
        pb.model_spec.name = model
        tensor = pb.inputs["x"]
        tensor.dtype = 1
        tensor.tensor_shape.dim.add().size = rows
        tensor.tensor_shape.dim.add().size = 1
        tensor.tensor_content = b"\0" * 7_600_000
        return pb

    def attack(result: Result) -> None:
        options = [("grpc.max_send_message_length", 1 << 30)]
        with grpc.insecure_channel(server.target, options=options) as channel:
            stub = stubs.PredictionServiceStub(channel)
            for index in range(200):
                pb = request("nosuch", 1_900_000) if index % 2 else request("m", 10)  # unknown model / bad size
                result.sent += 1
                try:
                    stub.Predict(pb, timeout=30)
                    result.answers["OK"] += 1
                except grpc.RpcError as error:
                    result.answers[error.code().name] += 1

    return measure(server, "2. 200 failing 7.6 MB gRPC Predicts", attack)


def case_shape_claim(server: Server) -> Result:
    """Item 3: 33-byte requests claiming 2 GB (DT_DOUBLE [250000000], one value), 3 at once."""
    grpc, predict_pb2, stubs = _grpc()

    def attack(result: Result) -> None:
        pb = predict_pb2.PredictRequest()
        pb.model_spec.name = "m"
        tensor = pb.inputs["x"]
        tensor.dtype = 2
        tensor.tensor_shape.dim.add().size = 250_000_000
        tensor.double_val.append(1.0)
        result.note = f"request {pb.ByteSize()} bytes"
        with grpc.insecure_channel(server.target) as channel:
            stub = stubs.PredictionServiceStub(channel)

            def one() -> str:
                try:
                    stub.Predict(pb, timeout=60)
                    return "OK"
                except grpc.RpcError as error:
                    return str(error.code().name)

            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                for code in pool.map(lambda _: one(), range(9)):
                    result.sent += 1
                    result.answers[code] += 1

    return measure(server, "3. 2 GB shape claims in 33 bytes (gRPC, 3 at once)", attack)


def case_config(model: Path) -> Result:
    """Item 4: the polled model config emptied, then cut mid-write, under load."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "models.config"
        text = f'model_config_list {{ config {{ name: "m" base_path: "{model}" model_platform: "tensorflow" }} }}\n'
        config.write_text(text)
        with serving(model, f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1") as server:
            body = b'{"instances": [[1.0]]}'

            def attack(result: Result) -> None:
                stop = time.monotonic() + 8
                config.write_text("")
                cut_at = time.monotonic() + 4
                while time.monotonic() < stop:
                    if cut_at and time.monotonic() > cut_at:
                        config.write_text(text[: len(text) // 2])
                        cut_at = 0.0
                    result.sent += 1
                    result.answers[str(post(server.rest, "/v1/models/m:predict", body, 10))] += 1
                config.write_text(text)

            return measure(server, "4. polled config emptied, then cut (8 s of REST load)", attack)


def case_big_body(server: Server) -> Result:
    """Item 5: a 57 MB JSON body (it froze REST and gRPC for 18.5 s)."""
    rows = 9_500_000
    body = b'{"instances": [' + b"[1.0]," * (rows - 1) + b"[1.0]]}"

    def attack(result: Result) -> None:
        result.note = f"body {len(body) / MIB:.0f} MiB"
        result.sent += 1
        result.answers[str(post(server.rest, "/v1/models/m:predict", body, 300))] += 1

    return measure(server, "5. 57 MB REST body", attack)


def case_gzip_bomb(server: Server) -> Result:
    """Item 5, compressed: 80 KB of gzip that inflates to ~60 MB of JSON (TF's cap is 100 MiB)."""
    import gzip

    rows = 5_000_000
    body = gzip.compress(b'{"instances": [' + b"[1.0, 2.0]," * (rows - 1) + b"[1.0, 2.0]]}", compresslevel=9)

    def attack(result: Result) -> None:
        result.note = f"body {len(body) // 1024} KiB gzip"
        head = (f"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        result.sent += 1
        result.answers[str(http(server.rest, head + body, 300)[0])] += 1

    return measure(server, "5b. gzip body inflating to 60 MB", attack)


def case_malformed_flood(server: Server) -> Result:
    """Malformed ~240 KB bodies, 8 at a time: TF's exact parser (pure Python) reports them."""
    body = b'{"instances": [' + b"1.0," * 60_000 + b"]}"

    def attack(result: Result) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for status in pool.map(lambda _: post(server.rest, "/v1/models/m:predict", body, 60), range(200)):
                result.sent += 1
                result.answers[str(status)] += 1

    return measure(server, "5c. 200 malformed 240 KB bodies, 8 at a time", attack)


def case_body_cap(server: Server) -> Result:
    """Item 6: a 2 GiB Content-Length with no body, and a chunked body past the cap."""

    def attack(result: Result) -> None:
        head = b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n"
        for _ in range(20):
            result.sent += 1
            result.answers[str(http(server.rest, head, 10)[0])] += 1
        with socket.create_connection(("127.0.0.1", server.rest), timeout=60) as sock:
            sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * (1 << 20)
            result.sent += 1
            try:
                for _ in range(1100):  # 1.1 GiB at most; the default cap is 1 GiB
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                pass
            answer = sock.recv(200)
            result.answers[answer.split(b" ")[1].decode() if answer else "closed"] += 1

    return measure(server, "6. 2 GiB Content-Length x20, 1.1 GiB chunked body", attack)


def case_slowloris(model: Path) -> Result:
    """Item 7: 260 connections sending a byte a second, with 256 file descriptors."""
    with serving(model, nofile=256) as server:
        grpc, predict_pb2, stubs = _grpc()

        def attack(result: Result) -> None:
            sockets: list[socket.socket] = []
            for _ in range(260):
                try:
                    sockets.append(socket.create_connection(("127.0.0.1", server.rest), timeout=5))
                    result.sent += 1
                except OSError:
                    result.answers["connect failed"] += 1
            pb = predict_pb2.PredictRequest()
            pb.model_spec.name = "m"
            pb.inputs["x"].dtype = 1
            pb.inputs["x"].tensor_shape.dim.add().size = 1
            pb.inputs["x"].tensor_shape.dim.add().size = 1
            pb.inputs["x"].float_val.append(1.0)
            grpc_ok = 0
            with grpc.insecure_channel(server.target) as channel:
                stub = stubs.PredictionServiceStub(channel)
                for second in range(14):
                    for sock in list(sockets):
                        try:
                            sock.sendall(b"G" if second == 0 else b"x")
                        except OSError:
                            sockets.remove(sock)
                            sock.close()
                            result.answers["closed by server"] += 1
                    try:
                        stub.Predict(pb, timeout=5)
                        grpc_ok += 1
                    except grpc.RpcError:
                        pass
                    time.sleep(1)
            for sock in sockets:
                sock.close()
            result.answers["still open after 14 s"] += len(sockets)
            result.note = f"gRPC during attack: {grpc_ok}/14 OK; log grew {server.log_bytes()} bytes"

        return measure(server, "7. 260 slowloris connections, 256 fds", attack)


def case_bad_chunk(server: Server) -> Result:
    """Item 9: a malformed chunked body (it hung forever)."""

    def attack(result: Result) -> None:
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", server.rest), timeout=10) as sock:
                sock.settimeout(10)
                sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                sock.sendall(b'5\r\n{"ins\r\nZZ\r\n')
                result.sent += 1
                try:
                    answer = sock.recv(200)
                    result.answers[answer.split(b" ")[1].decode() if answer else "closed"] += 1
                except OSError:
                    result.answers["no answer in 10 s"] += 1

    return measure(server, "9. malformed chunked bodies x20", attack)


def case_grpc_mistakes(server: Server) -> Result:
    """Item 10: _REF dtypes, absurd shapes, raw garbage (INTERNAL / UNKNOWN before)."""
    grpc, predict_pb2, stubs = _grpc()

    def attack(result: Result) -> None:
        with grpc.insecure_channel(server.target) as channel:
            raw = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            for dtype, dims in ((101, (1, 1)), (1, (1 << 40, 1 << 20)), (119, (2,))):
                pb = predict_pb2.PredictRequest()
                pb.model_spec.name = "m"
                pb.inputs["x"].dtype = dtype
                for size in dims:
                    pb.inputs["x"].tensor_shape.dim.add().size = size
                pb.inputs["x"].float_val.append(1.0)
                for body in (pb.SerializeToString(), b"\xff\xfe garbage " * 7):
                    result.sent += 1
                    try:
                        raw(body, timeout=10)
                        result.answers["OK"] += 1
                    except grpc.RpcError as error:
                        result.answers[error.code().name] += 1

    return measure(server, "10. gRPC _REF dtypes, absurd shapes, garbage", attack)


def case_log_flood(server: Server) -> Result:
    """Item 11: 1,000 malformed HTTP requests and 100 mid-body disconnects (10-12 traceback lines each)."""

    def attack(result: Result) -> None:
        before = server.log_bytes()
        for index in range(1000):
            result.sent += 1
            result.answers[str(http(server.rest, b"\x16\x03\x01 garbage %d\r\n\r\n" % index, 5)[0])] += 1
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", server.rest), timeout=5) as sock:
                sock.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            result.sent += 1
        time.sleep(0.5)
        result.note = f"log grew {server.log_bytes() - before} bytes"

    return measure(server, "11. 1000 malformed requests + 100 disconnects", attack)


def case_sigterm(model: Path) -> Result:
    """Item 8: SIGTERM under load, 16 gRPC + 16 REST closed-loop clients (12-13 of 16 in-flight gRPC
    calls came back CANCELLED). Each client stops at its first failure after the signal."""
    grpc, predict_pb2, stubs = _grpc()
    result = Result("8. SIGTERM under load: 16 gRPC + 16 REST closed-loop clients")
    with serving(model) as server:
        pb = predict_pb2.PredictRequest()
        pb.model_spec.name = "m"
        pb.inputs["x"].dtype = 1
        pb.inputs["x"].tensor_shape.dim.add().size = 1
        pb.inputs["x"].tensor_shape.dim.add().size = 1
        pb.inputs["x"].float_val.append(1.0)
        channel = grpc.insecure_channel(server.target)
        stub = stubs.PredictionServiceStub(channel)
        stub.Predict(pb, timeout=30)
        result.rss_before = server.rss()
        signalled: list[float] = []
        lock = threading.Lock()

        def record(started: float, outcome: str) -> bool:
            when = "before" if not signalled or started < signalled[0] else "after"
            with lock:
                result.sent += 1
                result.answers[f"{when} SIGTERM: {outcome}"] += 1
            return when == "before" or outcome in ("gRPC OK", "REST 200")

        def grpc_client() -> None:
            for _ in range(100_000):
                started = time.monotonic()
                try:
                    stub.Predict(pb, timeout=30)
                    outcome = "gRPC OK"
                except grpc.RpcError as error:
                    outcome = f"gRPC {error.code().name}"
                if not record(started, outcome):
                    return

        def rest_client() -> None:
            for _ in range(100_000):
                started = time.monotonic()
                status = post(server.rest, "/v1/models/m:predict", b'{"instances": [[1.0]]}', 30)
                if not record(started, f"REST {status or 'refused'}"):
                    return

        threads = [threading.Thread(target=fn) for fn in (grpc_client, rest_client) for _ in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(3)
        signalled.append(time.monotonic())
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(60)
        for thread in threads:
            thread.join(60)
        channel.close()
        result.note = f"exit code {code}"
    return result


def case_input_exprs() -> Result:
    """Item 12: `mlsrv run --input_exprs x=+++...+1` (RecursionError traceback, exit 1)."""
    result = Result("12. mlsrv run --input_exprs 'x=' + '+' * 3000 + '1'")
    done = subprocess.run([*MLSRV, "run", "--dir", str(EXAMPLE / "00000123"), "--tag_set", "serve",
                           "--signature_def", "serving_default", "--input_exprs", "x=" + "+" * 3000 + "1"],
                          capture_output=True, text=True, timeout=120)
    result.sent = 1
    result.answers[f"exit {done.returncode}"] += 1
    lines = [line for line in done.stderr.splitlines() if "Traceback" in line or "UsageError" in line]
    result.note = lines[-1][:80] if lines else ""
    return result


SHARED_SERVER_CASES: dict[str, Callable[[Server], Result]] = {
    "regex": case_regex,
    "grpc-leak": case_grpc_leak,
    "shape-claim": case_shape_claim,
    "big-body": case_big_body,
    "gzip-bomb": case_gzip_bomb,
    "malformed-flood": case_malformed_flood,
    "body-cap": case_body_cap,
    "bad-chunk": case_bad_chunk,
    "grpc-mistakes": case_grpc_mistakes,
    "log-flood": case_log_flood,
}
OWN_SERVER_CASES: dict[str, Callable[[Path], Result]] = {
    "config": case_config,
    "slowloris": case_slowloris,
    "sigterm": case_sigterm,
}


def render(results: list[Result]) -> str:
    lines = [
        "| case | sent | answers | /healthz probes: worst wait (non-200, unanswered) | RSS before → after "
        "| peak growth | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        answers = ", ".join(f"{code}: {count}" for code, count in sorted(r.answers.items()))
        memory = f"{r.rss_before / MIB:.0f} → {r.rss_after / MIB:.0f} MiB" if r.rss_before else "—"
        peak = f"{r.peak_growth / MIB:+.0f} MiB" if r.rss_before else "—"
        probe = f"{r.probes}: {r.worst_probe_s * 1000:.0f} ms ({r.probe_not_ok}, {r.probe_unanswered})"
        probe = probe if r.probes else "—"
        lines.append(f"| {r.case} | {r.sent} | {answers} | {probe} | {memory} | {peak} | {r.note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ",".join([*SHARED_SERVER_CASES, *OWN_SERVER_CASES, "input-exprs"])
    parser.add_argument("--cases", default="all", help=f"comma-separated, from: {names}")
    args = parser.parse_args()
    wanted = None if args.cases == "all" else set(args.cases.split(","))
    model = REFERENCE if REFERENCE.is_dir() else EXAMPLE
    print(f"model: {model.name}; started {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    results: list[Result] = []
    shared = [name for name in SHARED_SERVER_CASES if wanted is None or name in wanted]
    if shared:
        with serving(model) as server:
            for name in shared:
                results.append(SHARED_SERVER_CASES[name](server))
                print(render(results[-1:]).splitlines()[-1], flush=True)
    for name, case in OWN_SERVER_CASES.items():
        if wanted is None or name in wanted:
            results.append(case(model))
            print(render(results[-1:]).splitlines()[-1], flush=True)
    if wanted is None or "input-exprs" in wanted:
        results.append(case_input_exprs())
    print()
    print(render(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
