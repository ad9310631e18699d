"""A fleet on this machine: three `mlsrv serve` replicas behind nginx, under load, while they change.

    .venv/bin/python bench/fleet.py              # about two minutes; prints what every phase cost

Three plain replicas (`mlsrv serve`, one process each, their own ports) share one model repository;
nginx (Debian's nginx-light, started here on loopback) balances REST with `proxy_pass` and gRPC with
`grpc_pass`. Mixed REST and gRPC Predict load runs through nginx the whole time, and the fleet goes
through what operators do to it:

* (a) a rolling version update: version 2 appears in the repository; each replica loads it and
  unloads version 1 (availability-preserving: the new one is AVAILABLE before the old one goes);
* (b) a rolling restart: each replica in turn gets SIGTERM, drains (gRPC health NOT_SERVING, calls in
  flight finish, new ones get UNAVAILABLE or a refused connection, which nginx retries on another
  replica), exits, and is started again; the next one only once it is ready;
* (c) a replica killed with SIGKILL (its in-flight requests are lost to it; nginx retries them on
  another replica), then started again.

Predict is safe to repeat, so nginx may retry it on another replica even after it was sent
(`non_idempotent` in `proxy_next_upstream` / `grpc_next_upstream`); that, and mlsrv's drain, is what
makes a rolling restart lossless. Printed per phase: requests sent and failed by protocol, and which
model version answered (gRPC responses carry it), second by second.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HALF_PLUS_TWO = ROOT / "examples" / "models" / "half_plus_two" / "00000123"
MLSRV = [sys.executable, "-m", "mlsrv.cli"]
START_TIMEOUT_S = 120.0
#: on SIGTERM a replica turns not ready and serves on this long: the time the endpoints poller
#: (0.1 s) and an nginx reload need to take it out (Kubernetes users set a preStop sleep likewise)
DRAIN_DELAY_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 2.0) -> int:
    """GET on a fresh connection; 0 when it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            head = sock.recv(64)
        return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Replica:
    """One `mlsrv serve` process on its own ports."""

    name: str
    repository: Path
    folder: Path
    rest: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.folder / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*MLSRV, "serve", "--host=127.0.0.1", f"--port={self.grpc}", f"--rest_api_port={self.rest}",
             "--model_name=m", f"--model_base_path={self.repository / 'm'}", "--file_system_poll_wait_seconds=0.5",
             f"--drain_delay_seconds={DRAIN_DELAY_S}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while http_status(self.rest, "/readyz") != 200:
            if self.process is None or self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"replica {self.name} did not start; see {self.folder / self.name}.log")
            time.sleep(0.2)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def versions(self) -> list[int]:
        """AVAILABLE versions, from the replica itself (not through nginx)."""
        import json
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.rest}/v1/models/m", timeout=2) as reply:
                status = json.loads(reply.read())["model_version_status"]
        except (OSError, ValueError, KeyError):
            return []
        return sorted(int(v["version"]) for v in status if v["state"] == "AVAILABLE")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream rest {{
{rest_servers}
        keepalive 64;
    }}
    upstream grpc {{
{grpc_servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{rest_port};
        location / {{
            proxy_pass http://rest;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Predict is safe to repeat: retry it on another replica, even once sent
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
        }}
    }}
    server {{
        listen 127.0.0.1:{grpc_port} http2;
        location / {{
            grpc_pass grpc://grpc;
            grpc_next_upstream error timeout http_502 http_503 non_idempotent;
            grpc_next_upstream_tries 3;
        }}
    }}
}}
"""


class Nginx:
    """nginx in front of the replicas on two free loopback ports, reconfigured as readiness changes.

    Open-source nginx has no active health checks: something outside has to take a replica out of
    its upstreams, as Kubernetes' endpoints controller does for ingress-nginx. :class:`Endpoints`
    plays that part here: it polls each replica's ``/readyz`` and, when the ready set changes,
    rewrites the upstreams (``down`` for the others) and reloads nginx (SIGHUP: new workers take the
    new config, old ones finish what they hold).
    """

    def __init__(self, replicas: list[Replica], folder: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed: run scripts/install_tools.sh (Debian's nginx-light)")
        self.binary, self.replicas, self.folder = binary, replicas, folder
        self.rest_port, self.grpc_port = free_port(), free_port()
        self.conf = folder / "nginx.conf"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (folder / sub).mkdir(exist_ok=True)

    def write(self, ready: set[str]) -> None:
        def servers(port_of: str) -> str:
            return "\n".join(
                f"        server 127.0.0.1:{getattr(r, port_of)} max_fails=1 fail_timeout=2s"
                + ("" if r.name in ready else " down") + ";"
                for r in self.replicas
            )

        self.conf.write_text(NGINX_CONF.format(folder=self.folder, rest_servers=servers("rest"),
                                               grpc_servers=servers("grpc"), rest_port=self.rest_port,
                                               grpc_port=self.grpc_port))  # fmt: skip

    def start(self) -> None:
        self.write({r.name for r in self.replicas})
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.folder), "-c", str(self.conf), "-e", str(self.folder / "nginx-error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while http_status(self.rest_port, "/readyz") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {(self.folder / 'nginx-error.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def reload(self, ready: set[str]) -> None:
        self.write(ready)
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful stop
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class Endpoints:
    """Polls every replica's ``/readyz`` each :data:`POLL_S` and reloads nginx when the ready set changes."""

    POLL_S = 0.1

    def __init__(self, proxy: Nginx, say: Callable[[str], None]) -> None:
        self.proxy, self.say = proxy, say
        self.ready = {r.name for r in proxy.replicas}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Endpoints:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            ready = {r.name for r in self.proxy.replicas if http_status(r.rest, "/readyz", timeout=0.5) == 200}
            if ready != self.ready:
                self.say(f"endpoints: ready {sorted(ready)}; nginx reloaded")
                self.ready = ready
                self.proxy.reload(ready)


@dataclass
class Tally:
    """What the load saw, per phase and per second (thread-safe: the load runs in its own thread)."""

    phase: str = "warm-up"
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)  # (phase, protocol)
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)  # first error text per (phase, protocol)
    retried: Counter[str] = field(default_factory=Counter)  # REST requests resent after a stale keep-alive
    versions: dict[int, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))  # second -> version
    phase_versions: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float = field(default_factory=time.monotonic)

    def record_retry(self) -> None:
        with self.lock:
            self.retried[self.phase] += 1

    def record(self, protocol: str, error: str | None, version: int | None = None) -> None:
        with self.lock:
            key = (self.phase, protocol)
            self.sent[key] += 1
            if error is not None:
                self.failed[key] += 1
                self.errors.setdefault(key, error)
            if version is not None:
                self.versions[int(time.monotonic() - self.started)][version] += 1
                self.phase_versions[self.phase][version] += 1


class Load:
    """REST and gRPC Predict through nginx from ``streams`` loops each, paced to ``rate`` requests/s."""

    def __init__(self, rest_port: int, grpc_port: int, tally: Tally, streams: int = 4, rate: float = 150.0) -> None:
        self.rest_port, self.grpc_port, self.tally = rest_port, grpc_port, tally
        self.streams, self.interval = streams, 2 * streams / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        deadline = time.monotonic() + 60  # until both protocols answered once (the client imports TF)
        while sum(self.tally.sent.values()) < 2 * self.streams and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _main(self) -> None:
        import aiohttp
        import grpc
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        request = predict_pb2.PredictRequest()
        request.model_spec.name = "m"
        request.inputs["x"].dtype = 1  # DT_FLOAT
        request.inputs["x"].tensor_shape.dim.add().size = 1
        request.inputs["x"].float_val.append(1.0)
        url = f"http://127.0.0.1:{self.rest_port}/v1/models/m:predict"
        target = f"127.0.0.1:{self.grpc_port}"
        async with aiohttp.ClientSession() as session, grpc.aio.insecure_channel(target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)

            async def rest_once() -> str | None:
                async with session.post(url, data=b'{"instances": [1.0]}',
                                        timeout=aiohttp.ClientTimeout(total=10)) as reply:  # fmt: skip
                    body = await reply.read()
                    return None if reply.status == 200 and b"2.5" in body else f"HTTP {reply.status}: {body[:200]!r}"

            async def rest_loop() -> None:
                while not self._stop.is_set():
                    try:
                        try:
                            error = await rest_once()
                        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                            # a kept-alive connection nginx closed (a reload retires its old workers) as
                            # this request was written: what HTTP clients retry once (RFC 9110 9.2.2)
                            self.tally.record_retry()
                            error = await rest_once()
                    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                    self.tally.record("rest", error)
                    await asyncio.sleep(self.interval)

            async def grpc_loop() -> None:
                while not self._stop.is_set():
                    error, version = None, None
                    try:
                        response = await stub.Predict(request, timeout=10)
                        version = response.model_spec.version.value
                    except grpc.aio.AioRpcError as exc:
                        error = f"{exc.code().name}: {exc.details()}"
                    self.tally.record("grpc", error, version)
                    await asyncio.sleep(self.interval)

            await asyncio.gather(*(rest_loop() for _ in range(self.streams)),
                                 *(grpc_loop() for _ in range(self.streams)))  # fmt: skip


@dataclass
class FleetResult:
    tally: Tally
    phases: list[str]

    def failures(self, phase: str) -> int:
        return sum(self.tally.failed[(phase, protocol)] for protocol in ("rest", "grpc"))

    def lines(self) -> list[str]:
        t = self.tally
        out = ["| phase | REST sent | REST failed | REST resent on a stale keep-alive | gRPC sent | gRPC failed "
               "| first error |", "|---" * 7 + "|"]  # fmt: skip
        for phase in self.phases:
            first = t.errors.get((phase, "rest")) or t.errors.get((phase, "grpc")) or ""
            out.append(f"| {phase} | {t.sent[(phase, 'rest')]:,} | {t.failed[(phase, 'rest')]} | {t.retried[phase]} | "
                       f"{t.sent[(phase, 'grpc')]:,} | {t.failed[(phase, 'grpc')]} | {first[:120]} |")  # fmt: skip
        out += ["", "model version answering gRPC over time (seconds since start; seconds alike are merged):"]
        seconds = sorted(t.versions)
        start = 0
        while start < len(seconds):  # one line per run of seconds answered by the same set of versions
            end, kinds = start, set(t.versions[seconds[start]])
            while end + 1 < len(seconds) and set(t.versions[seconds[end + 1]]) == kinds:
                end += 1
            total: Counter[int] = Counter()
            for second in seconds[start : end + 1]:
                total.update(t.versions[second])
            span = f"{seconds[start]}" if start == end else f"{seconds[start]}-{seconds[end]}"
            out.append(f"  {span:>7} s: " + ", ".join(f"v{v} x{n}" for v, n in sorted(total.items())))
            start = end + 1
        return out


def run_fleet(folder: Path, *, settle_s: float = 3.0, log: bool = True) -> FleetResult:
    """The three phases under load; returns what the load saw. Bounded: every wait has a timeout."""

    def say(text: str) -> None:
        if log:
            print(f"[{time.monotonic() - tally.started:6.1f} s] {text}", flush=True)

    repository = folder / "repository"
    shutil.copytree(HALF_PLUS_TWO, repository / "m" / "1")
    replicas = [Replica(f"replica{i}", repository, folder) for i in range(3)]
    proxy = Nginx(replicas, folder)
    tally = Tally()
    phases = ["steady", "(a) rolling version update", "(b) rolling restart", "(c) SIGKILL one replica"]
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        proxy.start()
        with Endpoints(proxy, say), Load(proxy.rest_port, proxy.grpc_port, tally):
            tally.phase = phases[0]
            say("3 replicas ready behind nginx; steady load")
            time.sleep(settle_s)

            tally.phase = phases[1]
            staging = repository / "m" / ".incoming-2"
            shutil.copytree(HALF_PLUS_TWO, staging)
            staging.rename(repository / "m" / "2")  # appears whole, as a deploy tool would place it
            say("version 2 placed in the repository")
            deadline = time.monotonic() + START_TIMEOUT_S
            while any(r.versions() != [2] for r in replicas):
                if time.monotonic() > deadline:
                    raise RuntimeError("replicas did not move to version 2")
                time.sleep(0.2)
            say("every replica serves version 2 only")
            time.sleep(settle_s)

            tally.phase = phases[2]
            for replica in replicas:
                say(f"SIGTERM {replica.name}")
                replica.stop(signal.SIGTERM)
                replica.start()
                replica.wait_ready()
                say(f"{replica.name} back and ready")
            time.sleep(settle_s)

            tally.phase = phases[3]
            victim = replicas[1]
            say(f"SIGKILL {victim.name}")
            victim.stop(signal.SIGKILL)
            time.sleep(settle_s)
            victim.start()
            victim.wait_ready()
            say(f"{victim.name} back and ready")
            time.sleep(settle_s)
            tally.phase = "done"
    finally:
        proxy.stop()
        for replica in replicas:
            replica.stop(signal.SIGTERM)
    return FleetResult(tally, phases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of load between steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlsrv-fleet-") as folder:
        result = run_fleet(Path(folder), settle_s=args.settle)
    print()
    print("\n".join(result.lines()))


if __name__ == "__main__":
    main()
