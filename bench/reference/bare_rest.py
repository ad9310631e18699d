"""Reference: the leanest honest TF REST server, for issue #11's ratios (not a product).

A bare aiohttp server with orjson and uvloop (when installed) that serves one single-input
SavedModel at TF Serving's predict URL, row format only (``{"instances": [...]}``), and nothing
else: no validation beyond what numpy and TF do, no metrics, no versions, no error texts.

    python bench/reference/bare_rest.py --model-dir examples/models/half_plus_two/00000123 --port 8601
    python bench/reference/bare_rest.py ... --batch      # micro-batcher: <= 32 rows or 2 ms, one model thread

Per request (no ``--batch``) the model runs on the event loop, the cheapest path for one client.
With ``--batch`` requests queue for one model thread that takes up to 32 rows, waiting at most 2 ms
for a batch to fill. ``gc.freeze()`` after load keeps the model's objects out of every collection.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import tensorflow as tf
from aiohttp import web

MAX_ROWS = 32
WINDOW_S = 0.002


def load(model_dir: str) -> tuple[tf.types.experimental.ConcreteFunction, str, tf.dtypes.DType]:
    """The serving signature, its one input's name and dtype."""
    function = tf.saved_model.load(model_dir).signatures["serving_default"]
    (name, spec), = function.structured_input_signature[1].items()
    return function, name, spec.dtype


class MicroBatcher:
    """Requests wait for one model thread; each batch takes up to MAX_ROWS rows or waits WINDOW_S."""

    def __init__(self, run: object) -> None:
        self._run = run
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[dict[str, np.ndarray]]]] = asyncio.Queue()
        self._thread = ThreadPoolExecutor(1)

    async def submit(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        future: asyncio.Future[dict[str, np.ndarray]] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, future))
        return await future

    async def loop(self) -> None:
        running = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0])
            deadline = time.monotonic() + WINDOW_S
            while size < MAX_ROWS:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item[0])
            inputs = np.concatenate([rows for rows, _ in batch])
            outputs = await running.run_in_executor(self._thread, self._run, inputs)
            start = 0
            for rows, future in batch:
                end = start + len(rows)
                if not future.done():  # a client that went away cancelled its future
                    future.set_result({key: value[start:end] for key, value in outputs.items()})
                start = end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch", action="store_true")
    args = parser.parse_args()
    function, input_name, dtype = load(args.model_dir)

    def run(rows: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value.numpy() for key, value in function(**{input_name: tf.constant(rows, dtype)}).items()}

    run(np.zeros((1, *function.structured_input_signature[1][input_name].shape[1:]), dtype.as_numpy_dtype))
    batcher = MicroBatcher(run) if args.batch else None

    async def predict(request: web.Request) -> web.Response:
        rows = np.asarray(orjson.loads(await request.read())["instances"], dtype.as_numpy_dtype)
        outputs = await batcher.submit(rows) if batcher is not None else run(rows)
        if len(outputs) == 1:
            predictions: object = next(iter(outputs.values())).tolist()
        else:
            predictions = [{key: value[i].tolist() for key, value in outputs.items()} for i in range(len(rows))]
        return web.Response(body=orjson.dumps({"predictions": predictions}), content_type="application/json")

    async def start_batcher(app: web.Application) -> None:
        if batcher is not None:
            app["batcher"] = asyncio.create_task(batcher.loop())

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/v1/models/{name}:predict", predict)
    app.on_startup.append(start_batcher)
    gc.freeze()
    try:
        import uvloop
    except ImportError:
        loop = None
    else:
        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
