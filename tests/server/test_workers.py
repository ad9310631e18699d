"""``mlsrv serve --workers N``: N real server processes on one pair of ports, kept coherent.

Each test runs the real command (a supervisor and its workers) on free loopback ports. Requests go
over fresh connections, which the kernel spreads over the workers (``SO_REUSEPORT``), so a property
that held on only one worker would show up as failures. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from tests.conftest import EXAMPLES, free_port
from tests.server.process_server import MLSRV, ServerProcess, http_get, http_raw, parse_response, serve_process

pytestmark = pytest.mark.skipif(
    not (EXAMPLES / "half_plus_two" / "00000123" / "saved_model.pb").is_file(), reason="example models missing"
)

MONITORING = "prometheus_config { enable: true }\n"
MLSRV_SERVE = [*MLSRV, "serve"]


def predict(port: int, model: str = "m", *, timeout: float = 10.0) -> int:
    body = b'{"instances": [1.0, 2.0]}'
    request = (
        f"POST /v1/models/{model}:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return http_raw(port, request, timeout=timeout)[0]


def control_directory(server: ServerProcess) -> Path:
    found = re.search(r"control directory (\S+)\)", server.log_text())
    assert found, server.log_text()[-2000:]
    return Path(found.group(1))


def workers(server: ServerProcess) -> list[tuple[int, int]]:
    """(index, pid) of the workers the supervisor lists."""
    data = json.loads((control_directory(server) / "workers.json").read_text())
    return [(entry["index"], entry["pid"]) for entry in data["workers"]]


def worker_metrics(server: ServerProcess, pid: int) -> str:
    """One worker's own page, from its control socket (what the public page sums)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(control_directory(server) / f"worker-{pid}.sock"))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status, body = parse_response(data)
    assert status == 200
    return body.decode()


def ok_count(page: str, model: str = "m") -> int:
    match = re.search(rf':tensorflow:serving:request_count{{model_name="{model}",status="OK"}} (\d+)', page)
    return int(match.group(1)) if match else 0


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("workers")
    (folder / "monitoring.txt").write_text(MONITORING)
    with serve_process(folder, "--workers=2", f"--monitoring_config_file={folder / 'monitoring.txt'}") as server:
        yield server


def test_both_workers_serve_the_ports_and_one_scrape_sums_them(two_workers: ServerProcess) -> None:
    server = two_workers
    assert len(workers(server)) == 2 and http_get(server.rest_port, "/readyz", timeout=5)[0] == 200
    before = {pid: ok_count(worker_metrics(server, pid)) for _, pid in workers(server)}
    total_before = ok_count(http_get(server.rest_port, "/monitoring/prometheus/metrics", timeout=5)[1].decode())
    assert total_before == sum(before.values())
    statuses = [predict(server.rest_port) for _ in range(40)]
    assert statuses == [200] * 40
    served = {pid: ok_count(worker_metrics(server, pid)) - before[pid] for _, pid in workers(server)}
    assert sum(served.values()) == 40 and all(count > 0 for count in served.values()), served  # both worked
    for _ in range(3):  # whichever worker answers the scrape, the page is the sum
        page = http_get(server.rest_port, "/monitoring/prometheus/metrics", timeout=5)[1].decode()
        assert ok_count(page) == total_before + 40
        assert page.count("# TYPE :tensorflow:serving:request_count counter") == 1


def test_a_reload_rpc_reaches_every_worker(two_workers: ServerProcess) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    server = two_workers
    request = model_management_pb2.ReloadConfigRequest()
    for name in ("m", "other"):
        config = request.config.model_config_list.config.add()
        config.name, config.base_path, config.model_platform = name, str(EXAMPLES / "half_plus_two"), "tensorflow"
    with grpc.insecure_channel(server.grpc_target) as channel:
        response = model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(request, timeout=120)
    assert response.status.error_code == 0
    # every worker serves the new model at once: over 30 fresh connections none finds it missing
    assert [predict(server.rest_port, "other") for _ in range(30)] == [200] * 30
    loaded = re.findall(r"\[worker (\d)\] mlsrv.server.manager: Successfully loaded servable version "
                        r"\{name: other version: 123\}", server.log_text())  # fmt: skip
    assert sorted(loaded) == ["0", "1"]


def test_a_dead_worker_is_restarted_and_readiness_waits_for_it(two_workers: ServerProcess) -> None:
    server = two_workers
    (index, victim), survivor = workers(server)[0], workers(server)[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in [pid for _, pid in workers(server)], 10, "the supervisor to notice")
    assert survivor in workers(server)
    assert predict(server.rest_port) == 200  # the survivor serves meanwhile
    wait_until(lambda: len(workers(server)) == 2, 30, "a new worker to be started")
    replacement = next(pid for i, pid in workers(server) if i == index)
    assert replacement != victim
    wait_until(lambda: http_get(server.rest_port, "/readyz", timeout=5)[0] == 200, 120, "the new worker ready")
    assert f"worker {index} (pid {victim}) exited with signal SIGKILL" in server.log_text()
    wait_until(lambda: f"worker {index} restarted (pid {replacement})" in server.log_text(), 10, "the restart logged")
    # the restarted worker started from the reloaded config, not from the flags
    assert [predict(server.rest_port, "other") for _ in range(20)] == [200] * 20


def test_sighup_restarts_one_worker_at_a_time_without_failing_a_request(two_workers: ServerProcess) -> None:
    server = two_workers
    old = {pid for _, pid in workers(server)}
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        deadline = time.monotonic() + 240
        while not stop.is_set() and time.monotonic() < deadline:
            ready = http_get(server.rest_port, "/readyz", timeout=10)[0]
            status = predict(server.rest_port)
            if ready != 200 or status != 200:
                failures.append(f"readyz {ready}, predict {status}")

    thread = threading.Thread(target=load)
    thread.start()
    try:
        server.process.send_signal(signal.SIGHUP)
        wait_until(lambda: "rolling restart done" in server.log_text(), 240, "the rolling restart")
    finally:
        stop.set()
        thread.join(30)
    new = {pid for _, pid in workers(server)}
    assert len(new) == 2 and not new & old
    assert failures == []


def test_sigterm_drains_every_worker(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--workers=2", model=EXAMPLES / "slow") as server:
        pids = [pid for _, pid in workers(server)]
        results: list[int] = []
        threads = [threading.Thread(target=lambda: results.append(predict_slow(server.rest_port))) for _ in range(16)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)  # the requests are on their way to both workers
        server.process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        assert server.process.wait(60) == 0
        assert results == [200] * 16  # none was cut off by the shutdown
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def predict_slow(port: int) -> int:
    body = b'{"instances": [[1.0]]}'
    request = (
        "POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return http_raw(port, request, timeout=30)[0]


def test_a_busy_port_fails_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*MLSRV_SERVE, "--host=127.0.0.1", f"--port={port}", f"--rest_api_port={free_port()}", "--workers=2",
             "--model_name=m", f"--model_base_path={EXAMPLES / 'half_plus_two'}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"cannot serve gRPC on 127.0.0.1:{port}" in result.stderr and "worker 0 started" not in result.stderr


def test_bad_workers_values_are_config_errors() -> None:
    for bad in ("0", "-1", "two"):
        result = subprocess.run(
            [*MLSRV_SERVE, "--model_name=m", f"--model_base_path={EXAMPLES / 'half_plus_two'}", f"--workers={bad}"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2 and "--workers must be a whole number >= 1 or 'auto'" in result.stderr, bad


def test_workers_do_not_outlive_a_killed_supervisor(tmp_path: Path) -> None:
    with serve_process(tmp_path, "--workers=2") as server:
        pids = [pid for _, pid in workers(server)]
        server.process.kill()
        server.process.wait(10)

        def gone() -> bool:
            return all(not Path(f"/proc/{pid}").exists() or "(zombie)" in Path(f"/proc/{pid}/status").read_text()
                       for pid in pids)  # fmt: skip

        wait_until(gone, 60, "the workers to stop")
        shutil.rmtree(control_directory(server), ignore_errors=True)  # a killed supervisor could not

