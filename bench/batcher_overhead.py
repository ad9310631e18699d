"""Micro benchmark: what the Batcher costs and gains per request, against a direct executor call.

The fake model sleeps 250 µs + 3.6 µs per row (the shape measured for saved_model_half_plus_two on the
2-core dev box: ~266 µs for 1 row, ~730 µs for 128) and releases the GIL like a TF call does. A second
run uses a zero-cost model, so the difference between "direct" and "batcher" is the batcher's own
per-request overhead (queueing, futures, merge/split). Runs in a few seconds:

    .venv/bin/python bench/batcher_overhead.py [--concurrency 32] [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mlsrv.batching_params import BatchingOptions
from mlsrv.server.batcher import Batcher

Tensors = dict[str, np.ndarray]


def sleeping_model(fixed_s: float, per_row_s: float) -> Callable[[Mapping[str, np.ndarray]], Tensors]:
    def run(inputs: Mapping[str, np.ndarray]) -> Tensors:
        x = inputs["x"]
        cost = fixed_s + per_row_s * x.shape[0]
        if cost > 0:
            time.sleep(cost)
        return {"y": x * 0.5 + 2}

    return run


async def closed_loop(
    call: Callable[[Tensors], Awaitable[Tensors]], concurrency: int, seconds: float
) -> tuple[int, list[float]]:
    """``concurrency`` clients each send the next request when the previous answers."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    stop_at = loop.time() + seconds
    inputs = {"x": np.ones((1, 4), np.float32)}

    async def client() -> None:
        while loop.time() < stop_at:
            t0 = time.perf_counter()
            await call(inputs)
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return len(latencies), latencies


def summarize(label: str, n: int, lat: list[float], seconds: float) -> str:
    q = statistics.quantiles(lat, n=100)
    return (
        f"{label:<34} {n / seconds:>9.0f} req/s   mean {statistics.fmean(lat) * 1e6:>7.0f} µs"
        f"   p50 {q[49] * 1e6:>7.0f} µs   p99 {q[98] * 1e6:>7.0f} µs"
    )


async def measure(model_cost: tuple[float, float], concurrency: int, seconds: float) -> list[str]:
    model = sleeping_model(*model_cost)
    lines = []
    with ThreadPoolExecutor(1) as executor:
        loop = asyncio.get_running_loop()

        async def direct(inputs: Tensors) -> Tensors:
            return await loop.run_in_executor(executor, model, inputs)

        await closed_loop(direct, concurrency, 0.1)  # warm up the thread
        n, lat = await closed_loop(direct, concurrency, seconds)
        lines.append(summarize(f"direct executor call (c={concurrency})", n, lat, seconds))

        options = BatchingOptions(max_batch_size=128, num_batch_threads=1, max_enqueued_batches=100)
        async with Batcher(model, executor, options, name="bench") as batcher:
            n, lat = await closed_loop(batcher.submit, concurrency, seconds)
            stats = batcher.stats()
        lines.append(summarize(f"batcher, timeout 0 (c={concurrency})", n, lat, seconds))
        lines.append(
            f"{'':<34} {stats.batches} batches, mean {stats.input_rows / max(stats.batches, 1):.1f} rows, "
            f"mean queue delay {stats.queue_delay_s_sum / max(stats.tasks, 1) * 1e6:.0f} µs"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    for title, cost in (("fake model: 250 µs + 3.6 µs/row", (250e-6, 3.6e-6)), ("zero-cost model", (0.0, 0.0))):
        print(f"== {title}")
        for c in sorted({1, args.concurrency}):
            for line in asyncio.run(measure(cost, c, args.seconds)):
                print(line)


if __name__ == "__main__":
    main()
