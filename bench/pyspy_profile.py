"""Profile a hot path of `mlsrv serve` (or a reference server) under load with py-spy; print a summary.

    .venv/bin/python bench/pyspy_profile.py --path rest-small  > docs/perf/rest-small.txt
    .venv/bin/python bench/pyspy_profile.py --path rest-small --server bare > docs/perf/rest-small-bare.txt

Paths: rest-small (half_plus_two, hey c=32), rest-image (MobileNetV2 224x224x3 JSON, hey c=32),
grpc-small and grpc-image (h2load, 32 streams). The server runs with batching on (bench/compare.py's
parameters); py-spy samples it for --duration seconds at 250 Hz (`--nonblocking`, so the server is
not paused), idle frames dropped, while the kernel counts the event-loop thread's CPU time, which
sets the µs per request (py-spy short of CPU takes fewer samples than asked). The summary attributes
each sample of the event-loop thread to the first frame, counted from the top of the stack, that
matches one of a few named stages, so the table reads as "where the loop's time goes", per request;
then the hottest functions by own time.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import BATCHING, Model, export, reference  # noqa: E402
from run_benchmarks import EXAMPLES, cpu_times, ensure_tool, h2load_grpc, hey, server  # noqa: E402

#: (stage, substrings of a frame): the first stage whose substring is in a frame, scanning the
#: stack from its innermost frame outwards, takes the sample.
#: Own time in these frames is the event loop's C code (uvloop, and aiohttp's C parser and writer
#: called from it), seen from Python only as the frame that entered the loop.
LOOP_ENTRY: tuple[str, ...] = ("Runner.run ", "run_app ", "run_until_complete ", "run_forever ", "_run_once ",
                               "EpollSelector.select", "thread (")
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("model call (TF)", ("tensorflow/", "tf_session.py")),
    ("JSON decode", ("json_codec.py", "json_tensor.py", "json_parse.py", "json_value.py", "rest_decode.py",
                     "orjson", "simdjson", "fast_json")),
    ("response encode", ("json_write.py", "encode_predict_response", "dumps")),
    ("gRPC codec", ("grpc_codec.py", "tensor_codec.py")),
    ("batcher", ("batcher.py", "batch_queue.py", "batching_pool.py", "batch_tensors.py")),
    ("DataPlane checks", ("dataplane.py", "signature_checks.py", "manager.py")),
    ("metrics", ("metrics.py",)),
    ("mlsrv REST handler", ("server/rest.py", "routes.py", "errors.py")),
    ("mlsrv gRPC handler", ("server/grpc.py",)),
    ("reference server's handler (orjson, numpy, model)", ("bare_rest.py", "bare_grpc.py")),
    ("aiohttp web (request, response, middleware)", ("aiohttp/web", "aiohttp/helpers", "multidict", "yarl")),
    # mlsrv's connection handler (rest_connections.py) parses through aiohttp's parser and, for requests it
    # serves itself, writes their answers: its own time is mostly those C calls (the parser, send())
    ("HTTP connection (aiohttp's protocol, mlsrv's connection handler)",
     ("aiohttp/http", "aiohttp/base_protocol", "aiohttp/streams", "rest_connections")),
    ("grpc.aio", ("grpc/", "grpc_aio", "_cython")),
    ("event loop (Python: asyncio)", ("asyncio/", "uvloop", "selectors.py")),
]


def summarise(raw: Path, requests: int, seconds: float, loop_cpu: tuple[float, float]) -> list[str]:
    """The loop thread's samples by stage. Shares come from the samples; µs per request from the
    thread's CPU time measured by the kernel (``loop_cpu``: user, system seconds over ``seconds``):
    py-spy, itself short of CPU on a saturated machine, takes fewer samples than asked, so counting
    samples at the nominal rate understated the loop's time (by ~30% for mlsrv on 2026-12-07)."""
    per_thread: collections.Counter[str] = collections.Counter()
    stage_samples: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        per_thread[frames[0]] += int(count_text)
        stacks.append((frames, int(count_text)))
    # every server here runs its event loop on the main thread
    loop_thread = next((t for t in per_thread if t.endswith("MainThread")), per_thread.most_common(1)[0][0])
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if frames[0] != loop_thread:
            continue
        total += count
        own[frames[-1]] += count
        for function in {frame.rsplit(":", 1)[0] for frame in frames if "mlsrv/server" in frame or
                         "mlsrv/protocol" in frame}:
            inclusive[function] += count
        if any(key in frames[-1] for key in LOOP_ENTRY):
            stage_samples["event loop (C: uvloop, aiohttp's parser) or select"] += count
            continue
        for frame in reversed(frames):
            stage = next((name for name, keys in STAGES if any(key in frame for key in keys)), None)
            if stage is not None:
                break
        stage_samples[stage or "other"] += count
    user, system = loop_cpu
    per_request = 1e6 * (user + system) / max(1, requests)  # µs of the loop thread's CPU per request

    def us(count: int) -> float:
        return per_request * count / max(1, total)

    lines = [f"event-loop thread: {100 * (user + system) / seconds:.0f}% of a core over {seconds:.1f} s by the "
             f"kernel's count ({1e6 * user / max(1, requests):.0f} µs user + {1e6 * system / max(1, requests):.0f} µs "
             f"system per request, {requests} requests); {total} py-spy samples (asked for {250 * seconds:.0f})",
             "", "| stage | share of loop samples | loop µs per request |", "|---|---|---|"]
    for stage, count in stage_samples.most_common():
        lines.append(f"| {stage} | {100 * count / total:.1f}% | {us(count):.1f} |")
    if inclusive:
        lines += ["", "| mlsrv function (file) | inclusive share of loop samples | loop µs per request |",
                  "|---|---|---|"]
        for function, count in inclusive.most_common(20):
            lines.append(f"| `{function})` | {100 * count / total:.1f}% | {us(count):.1f} |")
    lines += ["", f"{'samples':>8}  own time, hottest functions of the loop thread", ""]
    lines += [f"{count:>8}  {name}" for name, count in own.most_common(30)]
    other = [(t, n) for t, n in per_thread.items() if t != loop_thread]
    if other:
        lines += ["", "other threads (samples): " + ", ".join(f"{t.strip()} {n}" for t, n in other)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", choices=["rest-small", "rest-image", "grpc-small", "grpc-image"], required=True)
    parser.add_argument("--server", choices=["mlsrv", "bare"], default="mlsrv")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--src", type=Path, default=None, help="profile another checkout's src/ (PYTHONPATH)")
    args = parser.parse_args()
    py_spy = ensure_tool("py-spy", "py-spy") if not (Path(sys.executable).parent / "py-spy").exists() \
        else str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.path.endswith("small"):
            model = Model("half_plus_two", EXAMPLES / "half_plus_two", "x", ())
        else:
            model = Model("mobilenet", export("mobilenet", scratch / "mobilenet"), "keras_tensor", (224, 224, 3))
        params = scratch / "batching.txt"
        params.write_text(BATCHING)
        grpc = args.path.startswith("grpc")
        if args.server == "mlsrv":
            context = server(model.name, model.base, "--enable_batching", f"--batching_parameters_file={params}",
                             src=args.src)
        else:
            context = reference("bare_grpc.py" if grpc else "bare_rest.py", model, *([] if grpc else ["--batch"]))
        with context as ports:
            port, pid = (ports[1], ports[2]) if args.server == "mlsrv" and grpc else \
                (ports[0], ports[2]) if args.server == "mlsrv" else ports
            raw = scratch / "profile.txt"
            results: dict[str, float] = {}
            body = scratch / "body.grpc"
            body.write_bytes(model.grpc_body())

            def load() -> None:
                if grpc:
                    results.update(h2load_grpc(port, body, 32, args.duration + 4))
                else:
                    results.update(hey(f"http://127.0.0.1:{port}/v1/models/{model.name}:predict",
                                       model.rest_body(), 32, args.duration + 3))

            driver = threading.Thread(target=load)
            driver.start()
            time.sleep(2.0 if not grpc else 1.0)
            cpu_before, started = cpu_times(pid, pid), time.monotonic()  # every server's loop is its main thread
            subprocess.run([py_spy, "record", "-p", str(pid), "-d", f"{args.duration:g}", "-r", "250",
                            "--nonblocking", "--threads", "-f", "raw", "-o", str(raw)], check=True, capture_output=True,
                           timeout=args.duration + 60)
            cpu_after, window = cpu_times(pid, pid), time.monotonic() - started
            driver.join(args.duration + 120)
            requests = int(results.get("rps", 0) * window)
            loop_cpu = (cpu_after[0] - cpu_before[0], cpu_after[1] - cpu_before[1])
            print(f"# {args.path}, {args.server}: {results.get('rps', 0):,.0f} requests/s over the run "
                  f"(p50 {results.get('p50_ms', 0):.1f} ms, p99 {results.get('p99_ms', 0):.1f} ms)")
            source = f" --src {args.src}" if args.src is not None else ""
            print(f"<!-- bench/pyspy_profile.py --path {args.path} --server {args.server}{source} "
                  f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->\n")
            print("\n".join(summarise(raw, requests, window, loop_cpu)))


if __name__ == "__main__":
    main()
