"""One Client API, three transports (REST, gRPC, in-process DataPlane) against one real in-process server
with the numpy half_plus_two fake: equal results and equal exceptions whichever transport carries them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlsrv import errors
from mlsrv.client.api import Client
from mlsrv.client.transports import InProcessTransport, Transport
from mlsrv.protocol.types import ModelSpec, RequestFormat, State
from tests.fakes import FakeLoaderFactory
from tests.server.harness import Running, running_server


def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"")
    return tmp_path / "m"


def transports(s: Running) -> dict[str, Transport | str]:
    return {
        "rest": s.rest_url,
        "grpc": f"grpc://{s.grpc_target}",
        "inprocess": InProcessTransport(s.server.dataplane),
    }


async def outcome(client: Client, action: str) -> Any:
    """The result of one scenario step, or the (class, message) of the error it raised."""
    spec = ModelSpec("m")
    x = {"x": np.array([[1.0], [5.0]], np.float32)}
    try:
        if action == "predict":
            signature = await client.signature(spec)
            response = await client.predict(spec, x, signature=signature, format=RequestFormat.ROW)
            return {k: (v.dtype.str, v.tolist()) for k, v in response.outputs.items()}
        if action == "metadata":
            meta = await client.metadata(ModelSpec("m", 1))
            return meta.spec, {k: v for k, v in meta.signatures.items()}
        if action == "status":
            return await client.status(spec)
        if action == "wait":
            return await client.wait_for(spec, State.AVAILABLE, timeout_s=5)
        if action == "missing":
            return await client.predict(ModelSpec("nope"), x)
        if action == "missing_version":
            return await client.status(ModelSpec("m", 7))
    except errors.MlsrvError as exc:
        return type(exc).__name__, exc.message
    raise AssertionError(action)


@pytest.mark.parametrize("action", ["predict", "metadata", "status", "wait", "missing", "missing_version"])
def test_every_transport_gives_the_same_answer(tmp_path: Path, action: str) -> None:
    async def main() -> dict[str, Any]:
        results = {}
        async with running_server(
            loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=str(model_dir(tmp_path))
        ) as s:
            for name, target in transports(s).items():
                async with Client(target, timeout=10) as client:
                    results[name] = await outcome(client, action)
        return results

    results = asyncio.run(main())
    assert results["rest"] == results["grpc"] == results["inprocess"], results
    if action == "predict":
        assert results["rest"] == {"y": ("<f4", [[2.5], [4.5]])}
    if action == "missing":
        assert results["rest"] == ("ModelNotFound", "Servable not found for request: Latest(nope)")
    if action == "missing_version":
        assert results["rest"] == ("ModelNotFound", "Could not find version 7 of model m")
