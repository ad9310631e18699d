"""REST over TLS from ``--ssl_config_file`` (issue #15, item 1): TLS 1.2+, mutual TLS when the config
requires client certificates, plain text refused then, and ``--rest_tls`` to choose."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from mlsrv.errors import ConfigError
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_rest_fake import model_dir


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}-ca.key", folder / f"{name}-ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
             "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return key, cert


def _issued(folder: Path, name: str, ca: tuple[Path, Path], *, server: bool) -> tuple[Path, Path]:
    key, request, cert = folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem"
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request))
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" if server
        else "extendedKeyUsage=clientAuth\n"
    )  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-days", "2", "-extfile", str(extensions), "-out", str(cert))  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA with a server and a client certificate, and a foreign CA with a client certificate of its own."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    folder = tmp_path_factory.mktemp("pki")
    ca, foreign = _authority(folder, "trusted"), _authority(folder, "foreign")
    server, client = _issued(folder, "server", ca, server=True), _issued(folder, "client", ca, server=False)
    stranger = _issued(folder, "stranger", foreign, server=False)
    return {
        "ca": ca[1], "server_key": server[0], "server_cert": server[1], "client_key": client[0],
        "client_cert": client[1], "stranger_key": stranger[0], "stranger_cert": stranger[1],
    }  # fmt: skip


def _ssl_config(folder: Path, pki: dict[str, Path], *, client_verify: bool) -> Path:
    quote = lambda path: json.dumps(path.read_text())  # noqa: E731 - PEM contents as a text-proto string
    path = folder / ("mtls.config" if client_verify else "tls.config")
    path.write_text(
        f"server_key: {quote(pki['server_key'])}\nserver_cert: {quote(pki['server_cert'])}\n"
        + (f"custom_ca: {quote(pki['ca'])}\nclient_verify: true\n" if client_verify else "")
    )
    return path


def _get(port: int, *, context: ssl.SSLContext | None, path: str = "/v1/models/m") -> int:
    """The status of ``GET path`` (on a thread: the server's loop runs in this one)."""
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10) if context is not None
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )  # fmt: skip
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def _client(pki: dict[str, Path], identity: str | None = None, *, tls: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    if identity is not None:
        context.load_cert_chain(str(pki[f"{identity}_cert"]), str(pki[f"{identity}_key"]))
    if tls is not None:  # an old protocol: the client allows it (security level 0), so the server decides
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = tls
    return context


def _port(s: object) -> int:
    return int(s.rest_url.rsplit(":", 1)[1])  # type: ignore[attr-defined]


def test_mutual_tls_accepts_the_right_client_and_refuses_the_rest(tmp_path: Path, pki: dict[str, Path]) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=True)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1)), ssl_config_file=str(config)) as s:
            port = _port(s)
            assert await asyncio.to_thread(_get, port, context=_client(pki, "client")) == 200
            for refused in (
                _client(pki),  # no client certificate
                _client(pki, "stranger"),  # a certificate from a foreign CA
            ):
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    await asyncio.to_thread(_get, port, context=refused)
            with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
                await asyncio.to_thread(_get, port, context=None)  # plain text when mTLS is required
            assert await asyncio.to_thread(_get, port, context=_client(pki, "client"), path="/healthz") == 200

    asyncio.run(main())


def test_tls_without_client_verification_is_off_by_default_and_on_when_asked(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=False)

    async def main() -> None:
        base = str(model_dir(tmp_path, 1))
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=base,
                                  ssl_config_file=str(config)) as s:  # TF Serving's REST: plain text
            assert await asyncio.to_thread(_get, _port(s), context=None) == 200
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m", model_base_path=base,
                                  ssl_config_file=str(config), rest_tls="on") as s:
            port = _port(s)
            assert await asyncio.to_thread(_get, port, context=_client(pki)) == 200  # no client certificate needed
            with pytest.raises(ssl.SSLError):  # TLS 1.0 and 1.1 are refused
                await asyncio.to_thread(_get, port, context=_client(pki, tls=ssl.TLSVersion.TLSv1_1))
            with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
                await asyncio.to_thread(_get, port, context=None)

    asyncio.run(main())


def test_rest_tls_off_keeps_plain_text_even_beside_mutual_tls_grpc(tmp_path: Path, pki: dict[str, Path]) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=True)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1)), ssl_config_file=str(config),
                                  rest_tls="off") as s:  # fmt: skip
            assert await asyncio.to_thread(_get, _port(s), context=None) == 200

    asyncio.run(main())


def test_the_cli_client_talks_mutual_tls_rest(tmp_path: Path, pki: dict[str, Path]) -> None:
    config = _ssl_config(tmp_path, pki, client_verify=True)

    async def cli(*extra: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlsrv.cli", "predict", "-m", "m", "--json", "-d", '{"instances": [[2.0]]}',
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, out.decode(), err.decode()

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1)), ssl_config_file=str(config)) as s:
            target = ["--rest", f"https://127.0.0.1:{_port(s)}", "--tls-ca", str(pki["ca"])]
            code, out, err = await cli(*target, "--tls-cert", str(pki["client_cert"]),
                                       "--tls-key", str(pki["client_key"]))
            assert code == 0, err
            assert json.loads(out) == {"predictions": [[3.0]]}
            code, _, err = await cli(*target)  # no client certificate: the handshake is refused
            assert code == 3 and "Traceback" not in err and err.startswith("TransportError: "), err

    asyncio.run(main())


def test_bad_rest_tls_values_and_unusable_keys_are_configuration_errors(tmp_path: Path, pki: dict[str, Path]) -> None:
    from mlsrv.config_loader import load_config
    from mlsrv.ssl_config import rest_ssl_context

    with pytest.raises(ConfigError, match="--rest_tls must be auto, on or off"):
        load_config({"model_name": "m", "model_base_path": "/m", "rest_tls": "maybe"})
    broken = tmp_path / "broken.config"
    broken.write_text('server_key: "not a key"\nserver_cert: "not a certificate"\n')
    with pytest.raises(ConfigError, match="cannot use server_key/server_cert for REST TLS"):
        rest_ssl_context(str(broken))
