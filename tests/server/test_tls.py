"""gRPC over TLS from TF Serving's ``--ssl_config_file`` (PEM contents in a text-format SSLConfig)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import numpy as np
import pytest

from mlsrv.errors import ConfigError
from mlsrv.protocol import tensor_codec
from mlsrv.ssl_config import parse_ssl_config
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_rest_fake import model_dir


def self_signed(tmp_path: Path) -> tuple[str, str]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return key.read_text(), cert.read_text()


def test_predict_over_tls(tmp_path: Path) -> None:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    key, cert = self_signed(tmp_path)
    config = tmp_path / "ssl.config"
    config.write_text(
        "server_key: " + repr(key).replace("'", '"') + "\nserver_cert: " + repr(cert).replace("'", '"') + "\n"
    )

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1)), ssl_config_file=str(config)) as s:
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.encode())
            async with grpc.aio.secure_channel(s.grpc_target, credentials) as channel:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "m"
                tensor_codec.from_ndarray(np.array([[2.0]], np.float32), request.inputs["x"], as_tensor_content=True)
                response = await prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request)
                assert list(response.outputs["y"].float_val) == [3.0]
            async with grpc.aio.insecure_channel(s.grpc_target) as plain:  # plaintext is refused
                with pytest.raises(grpc.aio.AioRpcError):
                    await prediction_service_pb2_grpc.PredictionServiceStub(plain).Predict(request, timeout=5)

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "message"),
    [("server_key: 'k'", "needs both server_key and server_cert"),
     ("server_key: 'k' server_cert: 'c' client_verify: true", "client_verify needs custom_ca"),
     ("server_pem: 'x'", "Error parsing text-format tensorflow.serving.SSLConfig")],
)
def test_bad_ssl_config(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_ssl_config(text, source="ssl.config")


def test_mutual_tls_with_the_cli_client(tmp_path: Path) -> None:
    """``client_verify`` requires a client certificate; ``mlsrv predict --tls-ca/--tls-cert/--tls-key`` sends one."""
    import sys

    key, cert = self_signed(tmp_path)
    quote = lambda text: repr(text).replace("'", '"')  # noqa: E731 - PEM as a text-proto string
    config = tmp_path / "ssl.config"
    config.write_text(f"server_key: {quote(key)}\nserver_cert: {quote(cert)}\ncustom_ca: {quote(cert)}\n"
                      "client_verify: true\n")
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)

    async def cli(*extra: str) -> tuple[int, str, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mlsrv.cli", "predict", "-m", "m", "--json", "-d", '{"instances": [[2.0]]}',
            *extra, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, out.decode(), err.decode()

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1)), ssl_config_file=str(config)) as s:
            target = ["--grpc", s.grpc_target, "--tls-ca", str(tmp_path / "cert.pem")]
            code, out, err = await cli(*target, "--tls-cert", str(tmp_path / "cert.pem"),
                                       "--tls-key", str(tmp_path / "key.pem"))
            assert code == 0, err
            assert json.loads(out) == {"predictions": [[3.0]]}
            code, _, err = await cli(*target)  # no client certificate: the handshake is refused
            assert code != 0 and "Traceback" not in err

    asyncio.run(main())
