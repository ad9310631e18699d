"""``--ssl_config_file``: TF Serving's text-format ``SSLConfig`` -> gRPC server credentials, and
the REST server's TLS context (``--rest_tls``; TF Serving's REST has no TLS).

As in TF Serving the fields hold PEM *contents*, not paths; ``client_verify`` requires and verifies a
client certificate against ``custom_ca`` (mutual TLS). REST offers TLS 1.2 and later only.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from typing import Any, Final

from mlsrv import textproto
from mlsrv.errors import ConfigError

_MESSAGES: Final = (
    textproto.Message(
        "SSLConfig",
        (
            textproto.Field("server_key", 1, "string"),
            textproto.Field("server_cert", 2, "string"),
            textproto.Field("custom_ca", 3, "string"),
            textproto.Field("client_verify", 4, "bool"),
        ),
    ),
)


def parse_ssl_config(text: str, *, source: str) -> Any:
    """The parsed ``tensorflow.serving.SSLConfig`` message, validated like TF Serving's server."""
    config = textproto.parse(text, package="tensorflow.serving", messages=_MESSAGES, root="SSLConfig", source=source)
    if not config.server_key or not config.server_cert:
        raise ConfigError(f"{source}: SSLConfig needs both server_key and server_cert (PEM contents)")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"{source}: client_verify needs custom_ca to verify client certificates against")
    return config


def load_server_credentials(path: str) -> Any:
    """``grpc.ServerCredentials`` for the SSLConfig in ``path``."""
    import grpc

    config = parse_ssl_config(textproto.read(path, "SSL config"), source=path)
    return grpc.ssl_server_credentials(
        [(config.server_key.encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )


def rest_ssl_context(path: str) -> ssl.SSLContext:
    """A server ``SSLContext`` for REST from the SSLConfig in ``path``: TLS 1.2 and later, the
    config's key and certificate, and with ``client_verify`` a client certificate required and
    checked against ``custom_ca``."""
    config = parse_ssl_config(textproto.read(path, "SSL config"), source=path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # the ssl module loads a key and certificate only from files: a private folder, gone at once
    with tempfile.TemporaryDirectory(prefix="mlsrv-tls-") as folder:
        key, cert = os.path.join(folder, "key.pem"), os.path.join(folder, "cert.pem")
        for name, text in ((key, config.server_key), (cert, config.server_cert)):
            with open(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file:
                file.write(text)
        try:
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(f"{path}: cannot use server_key/server_cert for REST TLS: {error}") from None
    if config.custom_ca:
        try:
            context.load_verify_locations(cadata=config.custom_ca)
        except (ssl.SSLError, ValueError) as error:
            raise ConfigError(f"{path}: cannot use custom_ca: {error}") from None
    context.verify_mode = ssl.CERT_REQUIRED if config.client_verify else ssl.CERT_NONE
    return context

