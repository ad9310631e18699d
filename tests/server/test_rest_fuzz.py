"""Hundreds of malformed REST bodies: each gets a 4xx JSON error and the server keeps answering."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from tests.fakes import FakeLoaderFactory
from tests.server.harness import Running, running_server
from tests.server.test_rest_fake import model_dir

VALID = b'{"instances": [[1.0], [2.0]]}'


def malformed_bodies(seed: int = 7, count: int = 400) -> list[bytes]:
    """Truncations, wrong types, deep nesting, huge numbers, invalid UTF-8, wrong shapes, random bytes."""
    rng = random.Random(seed)
    fixed = [
        b"", b"{", b"[", b"null", b"1", b'"x"', b"[]", b"{}", b'{"instances": []}', b'{"inputs": {}}',
        b'{"instances": 5}', b'{"instances": "x"}', b'{"instances": [[1.0], "a"]}', b'{"instances": [[1, 2], [3]]}',
        b'{"instances": [{"x": [1.0]}, [2.0]]}', b'{"instances": [[1.0]], "inputs": [[1.0]]}',
        b'{"instances": [[true]]}', b'{"instances": [[null]]}', b'{"instances": [[{"b64": "AAA="}]]}',
        b'{"inputs": {"y": [1.0]}}', b'{"signature_name": ["a"], "instances": [[1.0]]}',
        b'{"instances": [[1e999999]]}', b'{"instances": [[123456789012345678901234567890]]}',
        b'{"instances": [[1.0]]', b'{"instances": [[1.0]],}', b"\xff\xfe\xfd", b'{"instances": ["\xff"]}',
        b'{"instances": [[1.0]]}' + b"\x00", b'{"\xc3\x28": 1}', b"[" * 100_000 + b"]" * 100_000,
        b'{"instances": ' + b"[" * 5000 + b"1.0" + b"]" * 5000 + b"}",
        b'{"inputs": ' + b"[" * 64 + b"]" * 64 + b"}",
        b'{"instances": [[NaN], [Infinity], [-Infinity]]}',
    ]
    bodies = list(fixed)
    while len(bodies) < count:
        base = rng.choice([VALID, *fixed[:25]])
        action = rng.randrange(4)
        if action == 0 and len(base) > 1:
            bodies.append(base[: rng.randrange(1, len(base))])
        elif action == 1:
            position = rng.randrange(len(base) + 1)
            bodies.append(base[:position] + bytes([rng.randrange(256)]) + base[position:])
        elif action == 2:
            bodies.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))))
        else:
            doc = {"instances": [[rng.choice([1.0, "s", None, [], {}, True, 10**30])] for _ in range(3)]}
            bodies.append(json.dumps(doc).encode())
    return bodies


def test_malformed_bodies_get_json_4xx_and_server_survives(tmp_path: Path) -> None:
    async def scenario(s: Running) -> None:
        ok_count = 0
        for body in malformed_bodies():
            status, parsed, response = await s.request("POST", "/v1/models/m:predict", raw=body)
            if status == 200:  # a random mutation can still be a valid request
                ok_count += 1
                continue
            assert 400 <= status < 500, (status, body[:80], parsed)
            assert response.headers["Content-Type"] == "application/json"
            assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str) and parsed["error"], body[:80]
            assert await s.post("/v1/models/m:predict", raw=VALID) == (200, {"predictions": [[2.5], [3.0]]})
        assert ok_count < 100
        for path in ("/v1/models/m:classify", "/v1/models/m:regress"):
            for body in malformed_bodies(seed=11, count=60):
                status, parsed, _ = await s.request("POST", path, raw=body)
                assert 400 <= status < 500 and isinstance(parsed, dict) and "error" in parsed, (path, body[:80])

    async def main() -> None:
        async with running_server(
            loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=str(model_dir(tmp_path, 1))
        ) as s:
            await asyncio.wait_for(scenario(s), 120)

    asyncio.run(main())
