"""What the REST connection spends turning away one request whose body is large (issue #18).

    git worktree add /tmp/before <commit>   # a checkout to compare with (optional)
    .venv/bin/python bench/door_refusal.py --rounds 3 --before-src /tmp/before/src

`bench/refusal_cost.py` measures a refusal of a small request through the whole server. This one
isolates the connection: a server process runs mlsrv's `ConnectionGuard` (aiohttp's parser, uvloop)
with a door that turns every request away, and client processes send MLP-sized predict requests
(64 rows of 784 numbers as JSON, ~530 KB; `--body-kb` to change) on kept-alive connections, each
waiting for its 503 before sending the next. The server process makes `mlsrv serve`'s process
settings (`process_tuning.tune_process`: its malloc thresholds decide whether a large body's memory
is faulted in afresh each time). Printed: the server process's CPU and minor page faults per refusal
(from /proc), for this tree and `--before-src`'s `src/`, in alternated rounds. The refused body must
still be read to keep the connection usable (closing on unread data makes the kernel reset the
connection, which can destroy the 503 before the client reads it).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import time
from multiprocessing.queues import Queue
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import cpu_seconds, minor_faults  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 17\r\n"
           b"Retry-After: 1\r\n\r\n{\"error\": \"full\"}")


def mlp_body(kb: int) -> bytes:
    """A predict body of about ``kb`` KB: rows of 784 numbers, as `mlsrv bench` sends for the MLP."""
    row = b"[" + b",".join([b"0.123456"] * 784) + b"]"
    rows = max(1, kb * 1024 // (len(row) + 1))
    return b'{"instances": [' + b",".join([row] * rows) + b"]}"


def serve(src: str, ports: Queue[int], stop: Queue[int]) -> None:
    """The server process: mlsrv's connection handling from ``src``, every request refused at the door."""
    sys.path.insert(0, src)
    import uvloop
    from aiohttp import web

    from mlsrv.server.process_tuning import tune_process
    from mlsrv.server.rest_connections import ConnectionGuard, ConnectionLimits

    tune_process()  # as `mlsrv serve` does (its malloc settings decide what a large body costs)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def handler(request: web.BaseRequest) -> web.Response:
            return web.Response(status=500)  # never reached: the door refuses everything

        guard = ConnectionGuard(web.Server(handler), ConnectionLimits(10.0, 1000),
                                {"loop": loop, "access_log": None})
        guard.door = lambda message: REFUSAL
        listener = await loop.create_server(guard, "127.0.0.1", 0)
        ports.put(listener.sockets[0].getsockname()[1])
        await loop.run_in_executor(None, stop.get)

    uvloop.run(main())


def client(port: int, body: bytes, requests: int) -> None:
    """Send ``requests`` requests on one kept-alive connection, each after the previous 503."""
    head = (b"POST /v1/models/mlp:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for _ in range(requests):
            sock.sendall(head + body)
            answer = b""
            while not answer.endswith(b'"full"}'):
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("the server closed the connection")
                answer += chunk


def measure(src: Path, body: bytes, requests: int, connections: int) -> tuple[float, float]:
    """Server CPU seconds and page faults per refusal."""
    context = multiprocessing.get_context("spawn")  # a fresh server, as `mlsrv serve` is
    ports: Queue[int] = context.Queue()
    stop: Queue[int] = context.Queue()
    server = context.Process(target=serve, args=(str(src), ports, stop))
    server.start()
    try:
        port = ports.get(timeout=60)
        client(port, body, 20)  # warm-up
        assert server.pid is not None
        before = cpu_seconds(server.pid)
        faults_before = minor_faults(server.pid)
        clients = [context.Process(target=client, args=(port, body, requests // connections))
                   for _ in range(connections)]
        for process in clients:
            process.start()
        for process in clients:
            process.join()
        spent = cpu_seconds(server.pid) - before
        faults = minor_faults(server.pid) - faults_before
    finally:
        stop.put(0)
        server.join(10)
        if server.is_alive():
            server.kill()
    sent = requests // connections * connections
    return spent / sent, faults / sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--body-kb", type=int, default=530)
    parser.add_argument("--before-src", type=Path)
    args = parser.parse_args()
    body = mlp_body(args.body_kb)
    trees = {"this tree": ROOT / "src"}
    if args.before_src:
        trees["before"] = args.before_src
    costs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for _ in range(args.rounds):
        for name, src in trees.items():
            costs[name].append(measure(src, body, args.requests, args.connections))
    print(f"<!-- bench/door_refusal.py {started}, {os.cpu_count()} CPUs, {len(body):,} byte bodies, "
          f"{args.requests} refusals x {args.rounds} rounds, {args.connections} connections -->")
    print("| server | CPU per refusal, each round | median | page faults per refusal (median) |")
    print("|---|---|---|---|")
    for name, values in costs.items():
        rounds = ", ".join(f"{1e6 * cpu:.0f} µs" for cpu, _ in values)
        cpu = statistics.median(cpu for cpu, _ in values)
        faults = statistics.median(faults for _, faults in values)
        print(f"| {name} | {rounds} | {1e6 * cpu:.0f} µs | {faults:.0f} |")


if __name__ == "__main__":
    main()
