"""gRPC over TLS from TF Serving's ``--ssl_config_file`` (PEM contents in a text-format SSLConfig)."""

from __future__ import annotations

import asyncio
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
