"""``tensorflow.ProfilerService`` on the gRPC port, as TF Serving registers it (issue #12 item 3):
TensorFlow's own profiler client traces the model calls made while it waits."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from tests.conftest import EXAMPLES
from tests.server.harness import running_server

pytestmark = pytest.mark.tf


def test_a_trace_through_the_grpc_port_records_the_model_calls(tmp_path: Path) -> None:
    import tensorflow as tf

    logdir = tmp_path / "profile"

    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(EXAMPLES / "half_plus_two"),
                                  enable_profiler=True) as s:  # fmt: skip
            traced = threading.Thread(
                target=tf.profiler.experimental.client.trace,
                args=(f"grpc://{s.grpc_target}", str(logdir), 3000),
            )
            traced.start()
            deadline = asyncio.get_running_loop().time() + 60
            while traced.is_alive():  # model calls while the trace runs (3 s, a minute at most)
                assert asyncio.get_running_loop().time() < deadline, "the trace never ended"
                assert (await s.post("/v1/models/m:predict", {"instances": [1.0]}))[0] == 200
                await asyncio.sleep(0.02)
            traced.join(30)

    asyncio.run(main())
    traces = list(logdir.rglob("*.xplane.pb"))
    assert len(traces) == 1, sorted(logdir.rglob("*"))
    content = traces[0].read_bytes()
    assert b"Mul" in content or b"SessionRun" in content  # the model's ops ran during the trace


def test_without_the_flag_the_service_is_not_there(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(model_name="m", model_base_path=str(EXAMPLES / "half_plus_two")) as s:
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                call = channel.unary_unary("/tensorflow.ProfilerService/Monitor")
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call(b"", timeout=10)
                assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED

    asyncio.run(main())
