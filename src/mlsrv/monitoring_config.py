"""``--monitoring_config_file``: TF Serving's text-format ``MonitoringConfig`` (Prometheus settings).

``MonitoringConfig{ PrometheusConfig prometheus_config = 1 }``, ``PrometheusConfig{ bool enable = 1;
string path = 2 }``; an empty path means TF's default ``/monitoring/prometheus/metrics``. As in TF
Serving the file is only read when REST is on (the page is served on the REST port).
"""

from __future__ import annotations

from typing import Final, NamedTuple

from mlsrv import textproto

DEFAULT_PATH: Final = "/monitoring/prometheus/metrics"

_MESSAGES: Final = (
    textproto.Message("MonitoringConfig", (textproto.Field("prometheus_config", 1, "PrometheusConfig"),)),
    textproto.Message(
        "PrometheusConfig",
        (textproto.Field("enable", 1, "bool"), textproto.Field("path", 2, "string")),
    ),
)


class PrometheusSettings(NamedTuple):
    """Whether to serve the Prometheus page, and on which exact path."""

    enabled: bool
    path: str


def parse_monitoring_config(text: str, *, source: str) -> PrometheusSettings:
    """Parse a MonitoringConfig; ConfigError (naming ``source``) on bad syntax or unknown fields."""
    config = textproto.parse(
        text, package="tensorflow.serving", messages=_MESSAGES, root="MonitoringConfig", source=source
    )
    prometheus = config.prometheus_config
    return PrometheusSettings(bool(prometheus.enable), prometheus.path or DEFAULT_PATH)


def load_monitoring_config(path: str) -> PrometheusSettings:
    """The settings in the file at ``path``; ConfigError if it cannot be read or parsed."""
    return parse_monitoring_config(textproto.read(path, "monitoring config"), source=path)
