"""``--ssl_config_file``: TF Serving's text-format ``SSLConfig`` -> gRPC server credentials.

As in TF Serving the fields hold PEM *contents*, not paths; ``client_verify`` requires and verifies a
client certificate against ``custom_ca`` (mutual TLS). Applies to gRPC only, like TF Serving.
"""

from __future__ import annotations

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
