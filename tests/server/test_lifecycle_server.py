"""Model lifecycle through a running server: polling, swaps, rollback, config reload, broken models."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import Running, running_server

POLL = 0.05


def version(base: Path, number: int) -> None:
    (base / str(number)).mkdir(parents=True, exist_ok=True)
    (base / str(number) / "saved_model.pb").write_bytes(b"")


def offset_per_version() -> FakeLoaderFactory:
    """Version v computes 0.5x + v, so an answer says which version served it."""
    return FakeLoaderFactory(servable_for=lambda sid: FakeServable(offset=float(sid.version)))


async def served_version(s: Running, name: str = "m") -> int | None:
    status, body = await s.post(f"/v1/models/{name}:predict", {"instances": [[0.0]]})
    return int(body["predictions"][0][0]) if status == 200 else None


async def eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(POLL)


def write_config(path: Path, models: dict[str, tuple[Path, str]]) -> str:
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}\n'
        for name, (base, extra) in models.items()
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return str(path)


def test_new_version_is_served_then_old_unloads_and_deleting_rolls_back(tmp_path: Path) -> None:
    base = tmp_path / "m"
    version(base, 1)

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_name="m", model_base_path=str(base),
                                  file_system_poll_wait_seconds=POLL) as s:
            assert await served_version(s) == 1
            version(base, 2)

            async def on_two() -> bool:
                return await served_version(s) == 2

            await eventually(on_two)
            events = [(e.id.version, e.state.name) for e in s.server.monitor.events()]
            assert events.index((2, "AVAILABLE")) < events.index((1, "UNLOADING"))  # availability preserved
            _, status = await s.get("/v1/models/m")
            states = {v["version"]: v["state"] for v in status["model_version_status"]}
            assert states["2"] == "AVAILABLE"
            shutil.rmtree(base / "2")

            async def back_on_one() -> bool:
                return await served_version(s) == 1

            await eventually(back_on_one)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("", {3}), ("model_version_policy { latest { num_versions: 2 } }", {2, 3}),
     ("model_version_policy { all {} }", {1, 2, 3}),
     ("model_version_policy { specific { versions: 1 versions: 3 } }", {1, 3})],
)
def test_version_policies(tmp_path: Path, policy: str, expected: set[int]) -> None:
    base = tmp_path / "m"
    for number in (1, 2, 3):
        version(base, number)
    config = write_config(tmp_path / "models.config", {"m": (base, policy)})

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_config_file=config) as s:
            _, status = await s.get("/v1/models/m")
            available = {int(v["version"]) for v in status["model_version_status"] if v["state"] == "AVAILABLE"}
            assert available == expected
            for number in (1, 2, 3):
                code, _ = await s.post(f"/v1/models/m/versions/{number}:predict", {"instances": [[0.0]]})
                assert code == (200 if number in expected else 404)
            assert await served_version(s) == max(expected)

    asyncio.run(main())


def test_config_file_polling_adds_and_removes_models_and_labels(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    version(a, 1)
    version(b, 5)
    version(b, 6)
    config = tmp_path / "models.config"
    write_config(config, {"a": (a, "")})

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_config_file=str(config),
                                  model_config_file_poll_wait_seconds=0.2) as s:
            assert await served_version(s, "a") == 1
            labelled = 'model_version_policy { all {} } version_labels { key: "stable" value: 5 }'
            # TF rebuilds the label map before loading, so a label on a version not yet AVAILABLE
            # fails its whole reload on every poll; mlsrv applies the rest (b in, a out) and moves the
            # label once version 5 is AVAILABLE (issue #12 item 8).
            write_config(config, {"b": (b, labelled)})

            async def swapped() -> bool:
                return await served_version(s, "b") == 6 and await served_version(s, "a") is None

            await eventually(swapped, timeout=15)

            async def labelled_five() -> bool:
                code, body = await s.post("/v1/models/b/labels/stable:predict", {"instances": [[0.0]]})
                return (code, body) == (200, {"predictions": [[5.0]]})

            await eventually(labelled_five, timeout=15)
            config.write_text("this is not a model config")  # a broken file is logged and ignored
            await asyncio.sleep(0.6)
            assert await served_version(s, "b") == 6

    asyncio.run(main())


def test_broken_model_does_not_stop_the_others(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    version(good, 1)
    version(bad, 1)
    config = write_config(tmp_path / "models.config", {"good": (good, ""), "bad": (bad, "")})
    factory = FakeLoaderFactory({"bad": {"always_fail": True}})

    async def main() -> None:
        async with running_server(loader_factory=factory, model_config_file=config) as s:
            assert await served_version(s, "good") == 2  # FakeServable default offset
            code, status = await s.get("/v1/models/bad")
            assert code == 200
            (entry,) = status["model_version_status"]
            assert entry["state"] == "END" and entry["status"]["error_code"] == "INTERNAL"
            assert "fake load failure" in entry["status"]["error_message"]
            code, body = await s.post("/v1/models/bad:predict", {"instances": [[0.0]]})
            assert code == 404 and body["error"] == "Servable not found for request: Latest(bad)"

    asyncio.run(main())


def test_startup_fails_when_no_model_loads(tmp_path: Path) -> None:
    """TF Serving: ``Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: ...``."""
    from mlsrv.errors import Code, UnknownError

    base = tmp_path / "m"
    version(base, 7)

    async def main() -> None:
        expected = r"1 servable\(s\) did not become available: .*name: m version: 7"
        with pytest.raises(UnknownError, match=expected) as info:
            async with running_server(loader_factory=FakeLoaderFactory(always_fail=True), model_name="m",
                                      model_base_path=str(base)):
                pass
        assert info.value.code is Code.UNKNOWN

    asyncio.run(main())


def test_in_flight_requests_finish_before_unload(tmp_path: Path) -> None:
    base = tmp_path / "m"
    version(base, 1)
    factory = FakeLoaderFactory(servable_for=lambda sid: FakeServable(offset=float(sid.version), delay=0.5))

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", model_base_path=str(base)) as s:
            slow = asyncio.ensure_future(s.post("/v1/models/m:predict", {"instances": [[0.0]]}))
            await asyncio.sleep(0.1)
            shutil.rmtree(base / "1")
            version(base, 2)
            await s.server.source.poll()
            assert await slow == (200, {"predictions": [[1.0]]})

    asyncio.run(main())


def test_labels_in_the_first_config_need_the_allow_flag(tmp_path: Path) -> None:
    """TF builds the label map before the first load, so nothing is AVAILABLE yet (spec 4.2, issue #1608)."""
    from mlsrv.errors import Code, ConfigPreconditionError

    m = tmp_path / "m"
    version(m, 1)
    config = write_config(tmp_path / "models.config",
                          {"m": (m, 'version_labels { key: "stable" value: 1 }')})

    async def refused() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config):
            raise AssertionError("started")

    with pytest.raises(ConfigPreconditionError, match="Request to assign label to version 1 of model m, which is "
                                                      "not currently available for inference") as info:
        asyncio.run(refused())
    assert info.value.code is Code.FAILED_PRECONDITION and info.value.exit_code == 2

    async def allowed() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config,
                                  allow_version_labels_for_unavailable_models=True) as s:
            code, body = await s.post("/v1/models/m/labels/stable:predict", {"instances": [[0.0]]})
            assert (code, body) == (200, {"predictions": [[2.0]]})

    asyncio.run(allowed())


def test_an_empty_config_starts_and_serves_nothing(tmp_path: Path) -> None:
    """TF: 'Taking no action for empty config.' The server runs; models can come by reload."""
    config = tmp_path / "models.config"
    config.write_text("")

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=str(config)) as s:
            assert await s.get("/v1/models") == (200, {"models": []})
            assert (await s.post("/v1/models/m:predict", {"instances": [[0.0]]}))[0] == 404

    asyncio.run(main())


def test_a_polled_config_that_fails_validation_is_a_reload_failure(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """TF parses the file, then ReloadConfig validates it: the log line says which step failed."""
    a = tmp_path / "a"
    version(a, 1)
    config = tmp_path / "models.config"
    write_config(config, {"a": (a, "")})

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_config_file=str(config),
                                  model_config_file_poll_wait_seconds=0.2) as s:
            write_config(config, {"a": (Path("rel"), "")})
            await asyncio.sleep(0.6)
            assert await served_version(s, "a") == 1

    with caplog.at_level("ERROR", logger="mlsrv.server.app"):
        asyncio.run(main())
    assert ("PollFilesystemAndReloadConfig failed to ReloadConfig: Expected model a to have an absolute path or URI; "
            "got base_path()=rel") in caplog.text


def test_a_polled_config_that_is_empty_or_cut_short_changes_nothing(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Issue #10 item 4: ``: > models.config`` once unloaded every model (9,083 failed requests).

    Under continuous load the file is emptied, then cut in the middle of an entry; each time the
    poll's own log line proves the file was read, and not one request fails. An explicit empty
    ``model_config_list {}`` still removes every model, as in TF Serving.
    """
    a = tmp_path / "a"
    version(a, 1)
    config = tmp_path / "models.config"
    full = write_config(config, {"a": (a, "")})
    text = Path(full).read_text()
    failures: list[int | None] = []

    async def load(s: Running, stop: asyncio.Event) -> int:
        sent = 0
        while not stop.is_set() and sent < 100_000:
            answer = await served_version(s, "a")
            sent += 1
            if answer != 1:
                failures.append(answer)
            await asyncio.sleep(0.005)
        return sent

    async def logged(text: str, after: int) -> None:
        for _ in range(200):  # 10 s at most
            if text in caplog.text[after:]:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no poll logged {text!r}")

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_config_file=full,
                                  model_config_file_poll_wait_seconds=0.1) as s:
            stop = asyncio.Event()
            traffic = asyncio.create_task(load(s, stop))
            mark = len(caplog.text)
            config.write_text("")  # emptied, as by `: > models.config`
            await logged("Taking no action for empty config.", mark)
            mark = len(caplog.text)
            config.write_text(text[: len(text) // 2])  # a writer caught half-way through
            await logged("Failed to read ModelServerConfig file", mark)
            config.write_text(text)
            stop.set()
            assert await traffic > 10
            config.write_text("model_config_list {}\n")

            async def removed() -> bool:
                return await served_version(s, "a") is None

            await eventually(removed)

    with caplog.at_level("INFO", logger="mlsrv.server.app"):
        asyncio.run(main())
    assert failures == []


def test_a_config_file_that_changes_while_read_is_left_for_the_next_poll(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsrv.server import app

    a = tmp_path / "a"
    version(a, 1)
    config = Path(write_config(tmp_path / "models.config", {"a": (a, "")}))
    assert app.read_polled_model_config(str(config)) is not None
    real_stat = app.os.stat
    calls = 0

    def growing_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = real_stat(path, *args, **kwargs)
        if calls == 2:  # the stat after reading sees a writer's later bytes
            return app.os.stat_result((*result[:6], result.st_size + 1, *result[7:]))
        return result

    monkeypatch.setattr(app.os, "stat", growing_stat)
    assert app.read_polled_model_config(str(config)) is None


@pytest.mark.parametrize("which", ["port", "rest_api_port"])
def test_a_taken_port_fails_start_up_before_any_model_loads(tmp_path: Path, which: str) -> None:
    """gRPC would share a taken port (SO_REUSEPORT) and split clients between two servers: refused."""
    from mlsrv.errors import ConfigError

    version(tmp_path / "m", 1)
    factory = FakeLoaderFactory()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as another gRPC server would
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main() -> None:
            async with running_server(loader_factory=factory, model_name="m", model_base_path=str(tmp_path / "m"),
                                      **{which: port}):  # fmt: skip
                pass

        what = "gRPC" if which == "port" else "REST"
        with pytest.raises(ConfigError, match=f"cannot serve {what} on 127.0.0.1:{port}"):
            asyncio.run(main())
    assert factory.loaders == {}  # refused before loading anything


def test_a_busy_default_rest_port_that_was_not_asked_for_leaves_grpc_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TF Serving opens no REST port unless asked: a busy 8501 the user never asked for only warns."""
    import dataclasses

    import grpc

    from mlsrv.config_loader import load_config
    from mlsrv.server.app import Server
    from tests.server.harness import server_flags

    version(tmp_path / "m", 1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load_config(server_flags(model_name="m", model_base_path=str(tmp_path / "m")))
        config = dataclasses.replace(config, rest=dataclasses.replace(config.rest, port=port, port_asked=False))

        async def main() -> None:
            async with Server(config, loader_factory=FakeLoaderFactory()) as server:
                assert server.rest_port == 0 and server.grpc_port == config.grpc.port
                from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

                request = get_model_status_pb2.GetModelStatusRequest()
                request.model_spec.name = "m"
                async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
                    status = await model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=10)
                assert status.model_version_status[0].version == 1

        with caplog.at_level("WARNING"):
            asyncio.run(main())
    assert any(f"REST port {port} is busy" in r.getMessage() and "serving gRPC only" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_tf_servings_lifecycle_log_lines_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Tutorials quote, and deployment scripts wait for, TF Serving's lines: same words, same order."""
    base = tmp_path / "m"
    version(base, 1)

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_name="m", model_base_path=str(base),
                                  file_system_poll_wait_seconds=POLL) as s:  # fmt: skip
            version(base, 2)  # a swap: 2 loads, then 1 unloads
            await eventually(lambda: _answers(s, 2))
            await eventually(lambda: _unloaded(caplog, 1))

    with caplog.at_level("INFO"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("mlsrv")]
    expected = [
        f"Building single TensorFlow model file config:  model_name: m model_base_path: {base}",
        "Adding/updating models.",
        "(Re-)adding model: m",
        "Successfully reserved resources to load servable {name: m version: 1}",
        "Approving load for servable version {name: m version: 1}",
        "Loading servable version {name: m version: 1}",
        "Successfully loaded servable version {name: m version: 1}",
        "Running gRPC ModelServer at 127.0.0.1:",
        "Exporting HTTP/REST API at:localhost:",
        "Successfully reserved resources to load servable {name: m version: 2}",
        "Approving load for servable version {name: m version: 2}",
        "Loading servable version {name: m version: 2}",
        "Successfully loaded servable version {name: m version: 2}",
        "Quiescing servable version {name: m version: 1}",
        "Done quiescing servable version {name: m version: 1}",
        "Unloading servable version {name: m version: 1}",
        "Done unloading servable version {name: m version: 1}",
    ]
    found = iter(lines)
    for want in expected:  # in this order, each once
        assert any(line.startswith(want) for line in found), (want, lines)
        assert sum(line.startswith(want) for line in lines) == 1, want


async def _answers(s: Running, expected: int) -> bool:
    return await served_version(s) == expected


async def _unloaded(caplog: pytest.LogCaptureFixture, number: int) -> bool:
    return f"Done unloading servable version {{name: m version: {number}}}" in caplog.text


def test_a_polled_label_for_a_version_not_loaded_yet_holds_back_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The other changes of the file apply at once; the label follows when its version is AVAILABLE;
    one warning, not one per poll. A version that leaves service under a label is said once too."""
    m, other = tmp_path / "m", tmp_path / "other"
    version(m, 1)
    version(other, 1)
    path = tmp_path / "models.config"
    write_config(path, {"m": (m, 'model_version_policy { all {} } version_labels { key: "stable" value: 1 }')})

    async def main() -> None:
        async with running_server(loader_factory=offset_per_version(), model_config_file=str(path),
                                  model_config_file_poll_wait_seconds=POLL, file_system_poll_wait_seconds=POLL,
                                  allow_version_labels_for_unavailable_models=True) as s:  # fmt: skip
            assert await served_version_via(s, "stable") == 1
            write_config(path, {"m": (m, 'model_version_policy { all {} } version_labels { key: "stable" value: 2 }'),
                                "other": (other, "")})  # fmt: skip
            await eventually(lambda: _available(s, "other"))  # the rest of the change is applied
            await asyncio.sleep(POLL * 6)  # several polls while version 2 does not exist
            assert await served_version_via(s, "stable") == 1  # the label stays where it was
            version(m, 2)
            await eventually(lambda: _is_label(s, "stable", 2))  # and follows once version 2 is AVAILABLE
            shutil.rmtree(m / "1")  # version 1 leaves; no label points at it any more: nothing said
            write_config(path, {"m": (m, 'model_version_policy { all {} } version_labels { key: "old" value: 2 } '
                                         'version_labels { key: "stable" value: 2 }'), "other": (other, "")})
            await eventually(lambda: _is_label(s, "old", 2))
            shutil.rmtree(m / "2")  # a version leaves while labels point at it: said once per label
            await eventually(lambda: _said(caplog, "points to version 2, which is no longer loaded", 2))

    with caplog.at_level("INFO"):
        asyncio.run(main())
    deferred = [r.getMessage() for r in caplog.records if "is not moved to version 2 yet" in r.getMessage()]
    assert len(deferred) == 1 and "Version label stable of model m" in deferred[0]
    assert "Version label stable of model m now points to version 2" in caplog.text
    assert "PollFilesystemAndReloadConfig failed" not in caplog.text
    assert "points to version 1, which is no longer loaded" not in caplog.text


async def served_version_via(s: Running, label: str) -> int | None:
    status, body = await s.post(f"/v1/models/m/labels/{label}:predict", {"instances": [[0.0]]})
    return int(body["predictions"][0][0]) if status == 200 else None


async def _available(s: Running, name: str) -> bool:
    status, body = await s.get(f"/v1/models/{name}")
    return status == 200 and any(v["state"] == "AVAILABLE" for v in body["model_version_status"])


async def _is_label(s: Running, label: str, expected: int) -> bool:
    return await served_version_via(s, label) == expected


async def _said(caplog: pytest.LogCaptureFixture, text: str, times: int) -> bool:
    return sum(text in r.getMessage() for r in caplog.records) >= times
