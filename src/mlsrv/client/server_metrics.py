"""What the server itself saw during a bench run, from its Prometheus page: batches, queue wait, refusals.

A client measures latency and errors; why they are what they are (batches of one, requests waiting
in the batch queue, requests turned away at the door, deadlines dropped in the queue) only the
server knows. ``mlsrv bench`` reads the server's metrics page before and after each run and prints
the difference beside its own figures. The page is TF Serving's (``--monitoring_config_file``), so
the batching figures work against ``tensorflow_model_server`` too; the ``:mlsrv:`` series only
exist on mlsrv. Reading is best effort: a server without metrics gives a one-line note, never an
error, and the page is read outside the measured time.
"""

from __future__ import annotations

import math
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

#: TF Serving's default ``prometheus_config.path``.
DEFAULT_PATH: Final = "/monitoring/prometheus/metrics"
#: A page larger than this is not read (a metrics page is a few hundred KiB at most).
MAX_PAGE_BYTES: Final = 16 << 20
SCRAPE_TIMEOUT_S: Final = 5.0

_BATCH_SIZE: Final = ":tensorflow:serving:batching_session:processed_batch_size"
_QUEUE_WAIT: Final = ":tensorflow:serving:batching_session:queuing_latency"
_REJECTED: Final = ":mlsrv:admission:rejected_count"
_DEADLINE_DROPPED: Final = ":mlsrv:batching:deadline_dropped_count"
_CANCELLED: Final = ":mlsrv:batching:cancelled_count"

_LABEL: Final = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

#: One page: series name -> {sorted (label, value) pairs -> sample value}.
Page = dict[str, dict[tuple[tuple[str, str], ...], float]]


@dataclass(frozen=True)
class ServerStats:
    """The server's own counts over one run (the difference of two scrapes).

    ``mean_batch_size`` and ``mean_queue_wait_ms`` are server-wide (TF's batching metrics carry no
    model label), None when no batch ran; ``rejected`` is by reason (``requests``, ``bytes``,
    ``batch_queue_full``); the deadline drops and cancellations are the benched model's. ``note`` says
    why there is nothing when the page could not be read (then every figure is empty).
    """

    url: str
    batches: int = 0
    mean_batch_size: float | None = None
    mean_queue_wait_ms: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)
    deadline_dropped: int = 0
    cancelled: int = 0
    note: str = ""

    def summary_line(self) -> str:
        if self.note:
            return f"server: {self.note}"
        parts = [
            f"{self.batches} batches"
            + ("" if self.mean_batch_size is None else f", mean batch {self.mean_batch_size:.1f} rows"),
        ]
        if self.mean_queue_wait_ms is not None:
            parts.append(f"mean queue wait {self.mean_queue_wait_ms:.2f} ms")
        refused = ", ".join(f"{reason} {count}" for reason, count in sorted(self.rejected.items()) if count)
        parts.append(f"rejected: {refused or 'none'}")
        parts.append(f"deadline drops {self.deadline_dropped}, cancelled in queue {self.cancelled}")
        return "server: " + "; ".join(parts)


class ServerProbe:
    """Reads one server's page around each run: ``before = probe.read()``, run, ``probe.since(before)``."""

    def __init__(
        self, url: str, model: str, ssl_context: ssl.SSLContext | None = None, token: str | None = None
    ) -> None:
        """``token``: the bearer token of a server with ``--auth_token_file`` (its page needs one)."""
        self.url = url
        self.model = model
        self._ssl_context = ssl_context
        self._token = token

    def read(self) -> Page | str:
        return scrape(self.url, self._ssl_context, token=self._token)

    def since(self, before: Page | str) -> ServerStats:
        return difference(self.url, before, self.read(), self.model)


def metrics_url(rest_base_url: str) -> str:
    """The metrics page of a REST endpoint (``http(s)://host:port``) at TF Serving's default path."""
    return rest_base_url.rstrip("/") + DEFAULT_PATH


def scrape(url: str, ssl_context: ssl.SSLContext | None = None, *, token: str | None = None) -> Page | str:
    """Read and parse the page (blocking); a short reason instead when it cannot be read."""
    import urllib.error  # here: only bench runs that read a page pay for urllib's imports
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S, context=ssl_context) as response:
            raw = response.read(MAX_PAGE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        hint = " (serve with --monitoring_config_file to enable it)" if exc.code == 404 else ""
        return f"no metrics page at {url}: HTTP {exc.code}{hint}"
    except (OSError, ValueError) as exc:
        return f"cannot read {url}: {getattr(exc, 'reason', exc)}"
    if len(raw) > MAX_PAGE_BYTES:
        return f"the metrics page at {url} is larger than {MAX_PAGE_BYTES} bytes"
    return parse_page(raw.decode("utf-8", "replace"))


def parse_page(text: str) -> Page:
    """Prometheus text exposition -> :data:`Page`; lines that do not parse are skipped."""
    page: Page = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, labels, value = _sample(line)
        if name:
            page.setdefault(name, {})[labels] = value
    return page


def difference(url: str, before: Page | str, after: Page | str, model: str) -> ServerStats:
    """What happened on the server between two scrapes, for ``model`` where the series say."""
    if isinstance(before, str) or isinstance(after, str):
        return ServerStats(url, note=before if isinstance(before, str) else str(after))

    def total(name: str, where: Mapping[str, str] | None = None) -> float:
        def summed(page: Page) -> float:
            return sum(
                value
                for labels, value in page.get(name, {}).items()
                if where is None or all((key, want) in labels for key, want in where.items())
            )

        return summed(after) - summed(before)

    batches = round(total(_BATCH_SIZE + "_count"))
    waits = total(_QUEUE_WAIT + "_count")
    reasons = {dict(labels).get("reason", "") for labels in after.get(_REJECTED, {})}
    return ServerStats(
        url=url,
        batches=batches,
        mean_batch_size=total(_BATCH_SIZE + "_sum") / batches if batches > 0 else None,
        mean_queue_wait_ms=total(_QUEUE_WAIT + "_sum") / waits / 1000 if waits > 0 else None,
        rejected={reason: round(total(_REJECTED, {"reason": reason})) for reason in sorted(reasons) if reason},
        deadline_dropped=round(total(_DEADLINE_DROPPED, {"model_name": model})),
        cancelled=round(total(_CANCELLED, {"model_name": model})),
    )


def _sample(line: str) -> tuple[str, tuple[tuple[str, str], ...], float]:
    """``name{a="x",b="y"} 1.5`` -> (name, sorted labels, 1.5); ("", (), 0.0) when it does not parse."""
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        if close < brace:
            return "", (), 0.0
        name, label_text, rest = line[:brace], line[brace + 1 : close], line[close + 1 :]
    else:
        name, _, rest = line.partition(" ")
        label_text = ""
    try:
        value = float(rest.split()[0])
    except (IndexError, ValueError):
        return "", (), 0.0
    if not math.isfinite(value):
        return "", (), 0.0
    return name.strip(), tuple(sorted(_labels(label_text))), value


def _labels(text: str) -> list[tuple[str, str]]:
    """``a="x",b="y"`` -> [("a", "x"), ("b", "y")], with Prometheus' escapes (``\\"``, ``\\\\``, ``\\n``) undone."""
    return [(key, _unescape(value)) for key, value in _LABEL.findall(text)]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)
