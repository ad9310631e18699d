"""Bearer tokens (issue #15, item 2): every REST route and gRPC method refuses a missing or wrong
token and serves a right one, probes stay open, a token file change applies without a restart, and
model management can be switched off or kept to admin tokens.

The tables are built from the server itself (every REST verb of ``protocol.routes``, every path the
REST frontend serves beside the API, every method of every gRPC service the server registers), so a
route or method added later is covered without editing this file.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import descriptor_pool

from mlsrv.protocol import routes
from mlsrv.server import auth
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_rest_fake import model_dir

TOKEN, OTHER, ADMIN = "s3cret-token", "someone-else", "admin-token"
#: One request per REST verb (a verb added to routes.Verb without a row here fails the test).
REST_CALLS = {
    routes.Verb.LIST: ("GET", "/v1/models"),
    routes.Verb.STATUS: ("GET", "/v1/models/m"),
    routes.Verb.METADATA: ("GET", "/v1/models/m/metadata"),
    routes.Verb.PREDICT: ("POST", "/v1/models/m:predict"),
    routes.Verb.CLASSIFY: ("POST", "/v1/models/m:classify"),
    routes.Verb.REGRESS: ("POST", "/v1/models/m:regress"),
}


def _flags(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# who may call\n{TOKEN}\n\n")
    monitoring = tmp_path / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    return {"loader_factory": FakeLoaderFactory(), "model_name": "m", "model_base_path": str(model_dir(tmp_path, 1)),
            "auth_token_file": str(tokens), "monitoring_config_file": str(monitoring), **extra}  # fmt: skip


async def _rest(url: str, method: str, path: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        body = b'{"instances": [[1.0]]}' if method == "POST" else None
        async with session.request(method, url + path, data=body, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


def test_every_rest_route_refuses_missing_and_wrong_tokens_and_serves_the_right_one(tmp_path: Path) -> None:
    assert set(REST_CALLS) == set(routes.Verb)

    async def main() -> None:
        async with running_server(**_flags(tmp_path)) as s:
            frontend = s.server._rest_frontend
            assert frontend is not None
            calls = list(REST_CALLS.values()) + [("GET", path) for path in frontend.extra_paths] + [("GET", "/nope")]
            for method, path in calls:
                status, headers, body = await _rest(s.rest_url, method, path, token=None)
                if path in auth.OPEN_REST_PATHS:
                    assert status == 200, path  # probes stay open
                    continue
                assert status == 401 and headers["WWW-Authenticate"] == auth.CHALLENGE, (path, status)
                assert b"bearer token" in body, path
                status, headers, _ = await _rest(s.rest_url, method, path, token=OTHER)
                assert status == 401 and 'error="invalid_token"' in headers["WWW-Authenticate"], path
                status, _, _ = await _rest(s.rest_url, method, path, token=TOKEN)
                assert status != 401, (path, status)
            assert (await _rest(s.rest_url, "POST", "/v1/models/m:predict", TOKEN))[0] == 200

    asyncio.run(main())


def test_every_grpc_method_refuses_missing_and_wrong_tokens_and_health_stays_open(tmp_path: Path) -> None:
    import tensorflow_serving.apis.model_service_pb2  # noqa: F401  (their descriptors, in the default pool)
    import tensorflow_serving.apis.prediction_service_pb2  # noqa: F401

    async def call(channel: grpc.aio.Channel, path: str, token: str | None) -> grpc.StatusCode:
        metadata = None if token is None else (("authorization", f"Bearer {token}"),)
        try:
            await channel.unary_unary(path)(b"", timeout=10, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK

    async def main() -> None:
        async with running_server(**_flags(tmp_path)) as s:
            names = s.server._grpc.service_names
            assert "tensorflow.serving.PredictionService" in names and "grpc.health.v1.Health" in names
            pool = descriptor_pool.Default()
            async with grpc.aio.insecure_channel(s.grpc_target) as channel:
                for name in names:
                    for method in pool.FindServiceByName(name).methods:
                        path = f"/{name}/{method.name}"
                        anonymous = await call(channel, path, None)
                        if auth.OPEN_GRPC_PREFIXES[0].startswith(f"/{name}/"):
                            assert anonymous is not grpc.StatusCode.UNAUTHENTICATED, path
                            continue
                        assert anonymous is grpc.StatusCode.UNAUTHENTICATED, path
                        assert await call(channel, path, OTHER) is grpc.StatusCode.UNAUTHENTICATED, path
                        assert await call(channel, path, TOKEN) is not grpc.StatusCode.UNAUTHENTICATED, path

    asyncio.run(main())


def test_a_token_file_change_applies_without_a_restart(tmp_path: Path) -> None:
    flags = _flags(tmp_path)

    async def main() -> None:
        async with running_server(**flags) as s:
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", TOKEN))[0] == 200
            tokens = Path(flags["auth_token_file"])
            tokens.write_text(f"{OTHER}\n")
            os.utime(tokens, ns=(time.time_ns(), time.time_ns() + 1_000_000))  # a new mtime even on a coarse clock
            await asyncio.sleep(auth.RELOAD_CHECK_S + 0.2)
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", TOKEN))[0] == 401  # rotated out
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", OTHER))[0] == 200  # rotated in
            tokens.unlink()  # unreadable: the tokens read last stay
            await asyncio.sleep(auth.RELOAD_CHECK_S + 0.2)
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", OTHER))[0] == 200

    asyncio.run(main())


def test_model_management_can_be_switched_off_or_kept_to_admin_tokens(tmp_path: Path) -> None:
    from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

    admin = tmp_path / "admin.txt"
    admin.write_text(f"{ADMIN}\n")
    request = model_management_pb2.ReloadConfigRequest()
    request.config.model_config_list.config.add(
        name="m", base_path=str(model_dir(tmp_path, 1)), model_platform="tensorflow"
    )

    async def reload(target: str, token: str) -> grpc.StatusCode:
        async with grpc.aio.insecure_channel(target) as channel:
            try:
                await model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(
                    request, timeout=30, metadata=(("authorization", f"Bearer {token}"),)
                )
            except grpc.aio.AioRpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    async def main() -> None:
        async with running_server(**_flags(tmp_path, admin_token_file=str(admin))) as s:
            assert await reload(s.grpc_target, TOKEN) is grpc.StatusCode.PERMISSION_DENIED  # a caller's token
            assert await reload(s.grpc_target, OTHER) is grpc.StatusCode.UNAUTHENTICATED
            assert await reload(s.grpc_target, ADMIN) is grpc.StatusCode.OK
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", ADMIN))[0] == 200  # admins may call the rest
        async with running_server(**_flags(tmp_path, disable_model_management_api=True)) as s:
            assert await reload(s.grpc_target, TOKEN) is grpc.StatusCode.PERMISSION_DENIED

    asyncio.run(main())


def test_metrics_can_be_opened_to_scrapers_without_a_token(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(**_flags(tmp_path, auth_open_metrics=True)) as s:
            assert (await _rest(s.rest_url, "GET", "/monitoring/prometheus/metrics", None))[0] == 200
            assert (await _rest(s.rest_url, "GET", "/v1/models/m", None))[0] == 401

    asyncio.run(main())


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_commands_send_the_token_from_the_option_or_the_environment(tmp_path: Path, protocol: str) -> None:
    async def cli(target: list[str], env: dict[str, str], *extra: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlsrv.cli", "status", "-m", "m", *target, *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env})  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, (out + err).decode()

    async def main() -> None:
        async with running_server(**_flags(tmp_path)) as s:
            target = ["--rest", s.rest_url] if protocol == "rest" else ["--grpc", s.grpc_target]
            clean = {"MLSRV_TOKEN": ""}
            code, text = await cli(target, clean)
            assert code == 1 and "Unauthenticated" in text and TOKEN not in text, text
            assert (await cli(target, clean, "--token", TOKEN))[0] == 0
            assert (await cli(target, {"MLSRV_TOKEN": TOKEN}))[0] == 0

    asyncio.run(main())


def test_bench_reads_a_token_protected_metrics_page_with_its_token(tmp_path: Path) -> None:
    from mlsrv.client.server_metrics import ServerProbe, metrics_url

    async def main() -> None:
        async with running_server(**_flags(tmp_path)) as s:
            url = metrics_url(s.rest_url)
            refused = await asyncio.to_thread(ServerProbe(url, "m").read)
            assert isinstance(refused, str) and "HTTP 401" in refused
            page = await asyncio.to_thread(ServerProbe(url, "m", token=TOKEN).read)
            assert isinstance(page, dict) and page

    asyncio.run(main())


def test_token_files_must_exist_and_hold_a_token(tmp_path: Path) -> None:
    from mlsrv.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read the token file"):
        auth.TokenFile(str(tmp_path / "missing"))
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody\n\n")
    with pytest.raises(ConfigError, match="holds no token"):
        auth.TokenFile(str(empty))
    assert auth.bearer_token("bearer  abc ") == "abc" and auth.bearer_token("Basic abc") is None
