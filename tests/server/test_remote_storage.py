"""Model base paths in object storage: S3 against a real S3 server on loopback (moto's server mode),
gs:// and az:// through the same code path with fsspec's in-memory filesystem.

The S3 server sits behind a :class:`TcpProxy`, so a test can slow the store down and cut it in the
middle of a download. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mlsrv.config import Latest
from mlsrv.server import remote_storage
from mlsrv.server.remote_storage import RemoteStorage, RemoteStorageError, s3_options
from mlsrv.server.source import scan_remote
from tests.conftest import EXAMPLES, free_port
from tests.server.harness import Running, running_server
from tests.server.tcp_proxy import TcpProxy

HALF_PLUS_TWO = EXAMPLES / "half_plus_two" / "00000123"
needs_model = pytest.mark.skipif(not (HALF_PLUS_TWO / "saved_model.pb").is_file(), reason="example model missing")


def model_files() -> dict[str, bytes]:
    """half_plus_two's files, relative to its version folder."""
    return {
        str(path.relative_to(HALF_PLUS_TWO)): path.read_bytes() for path in HALF_PLUS_TWO.rglob("*") if path.is_file()
    }


def test_tf_servings_s3_variables_configure_s3fs() -> None:
    assert s3_options({}) == {}
    assert s3_options({"S3_ENDPOINT": "minio:9000", "S3_USE_HTTPS": "0", "AWS_REGION": "eu-west-1",
                       "S3_VERIFY_SSL": "0"}) == {  # fmt: skip
        "use_ssl": False,
        "client_kwargs": {"endpoint_url": "http://minio:9000", "region_name": "eu-west-1", "verify": False},
    }
    assert s3_options({"S3_ENDPOINT": "https://s3.example:443"})["client_kwargs"]["endpoint_url"] == (
        "https://s3.example:443"
    )


# -------------------------------------------------------------------- gs:// and az:// (in memory)


@pytest.mark.parametrize("scheme", ["gs", "az"])
def test_versions_are_listed_remotely_and_downloaded_once_into_the_cache(tmp_path: Path, scheme: str) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    fs.store.clear()
    base = f"{scheme}://bucket/models/m"
    for name, data in model_files().items():
        for version in (1, 2):
            fs.pipe(f"{base}/{version}/{name}", data)
    fs.pipe(f"{base}/not-a-version/x", b"")
    remote = RemoteStorage(tmp_path / "cache", lambda _scheme: fs)

    versions = scan_remote(remote, base, Latest(1))
    assert list(versions) == [2]
    local = Path(versions[2])
    assert (local / "saved_model.pb").read_bytes() == (HALF_PLUS_TWO / "saved_model.pb").read_bytes()
    assert sorted(p.name for p in local.parent.iterdir()) == ["2"]  # nothing partial left beside it

    fs.pipe(f"{base}/2/saved_model.pb", b"changed")  # a cached version is not fetched again
    assert scan_remote(remote, base, Latest(1)) == versions
    assert (local / "saved_model.pb").read_bytes() != b"changed"

    fs.rm(f"{base}/2", recursive=True)  # removed in the store: version 1 again, 2's copy pruned
    versions = scan_remote(remote, base, Latest(1))
    assert list(versions) == [1] and not local.exists()

    with pytest.raises(FileNotFoundError):
        scan_remote(remote, f"{scheme}://bucket/nothing-here", Latest(1))


def test_a_failed_download_leaves_nothing_in_the_cache(tmp_path: Path) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    class Failing(MemoryFileSystem):
        def get(self, *args: Any, **kwargs: Any) -> None:
            raise ConnectionError("the store went away")

    fs = Failing()
    fs.store.clear()
    fs.pipe("gs://b/m/1/saved_model.pb", b"x")
    remote = RemoteStorage(tmp_path / "cache", lambda _scheme: fs)
    with pytest.raises(RemoteStorageError, match="the store went away"):
        scan_remote(remote, "gs://b/m", Latest(1))
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_dir() and p.parent != tmp_path / "cache"] == []


@needs_model
def test_a_gs_model_is_served_over_rest_and_grpc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.implementations.memory import MemoryFileSystem

    fs = MemoryFileSystem()
    fs.store.clear()
    for name, data in model_files().items():
        fs.pipe(f"gs://bucket/hp2/123/{name}", data)
    monkeypatch.setattr(remote_storage, "filesystem_for", lambda _scheme: fs)

    async def main() -> None:
        async with running_server(model_name="m", model_base_path="gs://bucket/hp2",
                                  remote_cache_dir=str(tmp_path / "cache")) as s:  # fmt: skip
            assert await s.post("/v1/models/m:predict", {"instances": [1.0, 2.0]}) == (200, {"predictions": [2.5, 3.0]})
            status, body = await s.get("/v1/models/m")
            assert body["model_version_status"][0]["version"] == "123"

    asyncio.run(main())


# -------------------------------------------------------------------- s3:// against a real S3 server


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, TcpProxy]]:
    """A moto S3 server on loopback behind a proxy; yields (boto3 client on the server, proxy)."""
    import boto3  # dev dependencies (moto[server] brings boto3; s3fs is mlsrv[s3])
    import moto.server as moto_server
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                        "S3_USE_HTTPS": "0"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with TcpProxy(port) as proxy:
            monkeypatch.setenv("S3_ENDPOINT", f"127.0.0.1:{proxy.port}")
            client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1")
            client.create_bucket(Bucket="models")
            yield client, proxy
    finally:
        server.stop()


def upload_version(client: Any, version: int, extra: dict[str, bytes] | None = None) -> None:
    for name, data in {**model_files(), **(extra or {})}.items():
        client.put_object(Bucket="models", Key=f"hp2/{version}/{name}", Body=data)


def delete_version(client: Any, version: int) -> None:
    listed = client.list_objects_v2(Bucket="models", Prefix=f"hp2/{version}/")
    for item in listed.get("Contents", []):
        client.delete_object(Bucket="models", Key=item["Key"])


async def available_versions(s: Running) -> list[str]:
    status, body = await s.get("/v1/models/m")
    if status != 200:
        return []
    return sorted(v["version"] for v in body["model_version_status"] if v["state"] == "AVAILABLE")


async def eventually(condition: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


@needs_model
def test_s3_serve_add_remove_and_lose_the_store_mid_download(tmp_path: Path, s3: tuple[Any, TcpProxy]) -> None:
    client, proxy = s3
    cache = tmp_path / "cache"
    upload_version(client, 1)

    async def main() -> None:
        async with running_server(
            model_name="m", model_base_path="s3://models/hp2", remote_cache_dir=str(cache),
            file_system_poll_wait_seconds=0.2, remote_poll_wait_seconds=0.2,
        ) as s:  # fmt: skip
            assert await s.post("/v1/models/m:predict", {"instances": [1.0]}) == (200, {"predictions": [2.5]})
            assert await available_versions(s) == ["1"]

            upload_version(client, 2)  # a new version: downloaded, loaded, and the old one unloaded
            await eventually(lambda: _is(available_versions(s), ["2"]), 60, "version 2 to replace version 1")

            delete_version(client, 2)  # removed from the store: back to version 1, 2's copy pruned
            await eventually(lambda: _is(available_versions(s), ["1"]), 60, "version 1 to come back")
            await eventually(lambda: _true(not any(p.name == "2" for p in cache.rglob("2"))), 10, "the prune")

            # version 3 is large and the store slow; the store goes away in the middle of its download
            proxy.rate = 2_000_000
            upload_version(client, 3, {"assets/large.bin": os.urandom(8_000_000)})
            await eventually(lambda: _true(any(p.name.startswith(".partial-3-") for p in cache.rglob("*"))),
                             30, "the download of version 3 to start")  # fmt: skip
            proxy.cut()
            await asyncio.sleep(1.0)
            assert await available_versions(s) == ["1"]  # the old version keeps serving
            assert await s.post("/v1/models/m:predict", {"instances": [2.0]}) == (200, {"predictions": [3.0]})
            await eventually(lambda: _true(not any(p.name.startswith(".partial-") for p in cache.rglob("*"))),
                             60, "the partial download to be removed")  # fmt: skip
            assert not any(p.name == "3" for p in cache.rglob("3"))  # never put in place half-done

            proxy.rate = 0
            proxy.restore()  # the store is back: the next poll downloads version 3 again, whole
            await eventually(lambda: _is(available_versions(s), ["3"]), 120, "version 3 after the store came back")
            assert await s.post("/v1/models/m:predict", {"instances": [4.0]}) == (200, {"predictions": [4.0]})

    asyncio.run(main())


async def _is(value: Awaitable[list[str]], expected: list[str]) -> bool:
    return await value == expected


async def _true(value: bool) -> bool:
    return value
