"""What to run: ``BenchSpec`` and the parsers for the ``mlsrv bench`` flag values.

Parsers raise :class:`mlsrv.errors.UsageError` (CLI exit code 2) with a message naming the bad value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from mlsrv.errors import UsageError

Arrival = Literal["constant", "poisson"]

_UNIT_SECONDS: Final[dict[str, float]] = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zµ]*)\s*$")


@dataclass(frozen=True)
class BenchSpec:
    """One load pattern. Exactly one of ``concurrency`` (closed loop) or ``rate`` (open loop, requests/s);
    at least one of ``duration_s`` / ``requests`` (the run stops at whichever comes first).

    ``warmup_s`` runs first and requests *started* in it are not measured. ``batch_size`` is the rows
    per request (inferences/s = requests/s x batch_size). ``timeout_s`` bounds each request (a timeout
    counts as ``DEADLINE_EXCEEDED``). Open loop only: at most ``max_in_flight`` requests are
    outstanding, further ones are counted as dropped and not sent; a request started more than
    ``late_threshold_s`` after its intended time is counted as late. ``seed`` drives Poisson gaps.
    """

    concurrency: int | None = None
    rate: float | None = None
    arrival: Arrival = "constant"
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    batch_size: int = 1
    timeout_s: float = 30.0
    max_in_flight: int = 1000
    late_threshold_s: float = 0.01
    seed: int = 0

    @property
    def mode(self) -> Literal["closed", "open"]:
        return "closed" if self.concurrency is not None else "open"

    def validate(self) -> BenchSpec:
        """Return ``self`` if runnable, else raise ``UsageError`` naming the offending flag."""
        if (self.concurrency is None) == (self.rate is None):
            raise UsageError("set exactly one of --concurrency (closed loop) or --rate (open loop)")
        if self.concurrency is not None and self.concurrency < 1:
            raise UsageError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise UsageError(f"--rate must be a positive number, got {self.rate}")
        if self.arrival not in ("constant", "poisson"):
            raise UsageError(f"--arrival must be constant or poisson, got {self.arrival!r}")
        if self.duration_s is None and self.requests is None:
            raise UsageError("set --duration or --requests so the run ends")
        if self.duration_s is not None and not self.duration_s > 0:
            raise UsageError(f"--duration must be > 0, got {self.duration_s}")
        if self.requests is not None and self.requests < 1:
            raise UsageError(f"--requests must be >= 1, got {self.requests}")
        checks = (
            (self.warmup_s >= 0, "--warmup must be >= 0"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.timeout_s > 0, "--timeout must be > 0"),
            (self.max_in_flight >= 1, "--max-in-flight must be >= 1"),
            (self.late_threshold_s >= 0, "the late threshold must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        return self


def _quantity(text: str, default_unit: str, what: str) -> float:
    match = _QUANTITY.match(text)
    unit = (match.group(2) if match else "") or default_unit
    if match is None or unit not in _UNIT_SECONDS:
        raise UsageError(f"invalid {what} {text!r}: expected a number with us, ms, s, m or h (like 30s)")
    return float(match.group(1)) * _UNIT_SECONDS[unit]


def parse_duration(text: str) -> float:
    """``"30s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds -> seconds."""
    return _quantity(text, "s", "duration")


def parse_latency(text: str) -> float:
    """``"20ms"``, ``"1.5s"``, ``"300us"`` or a bare number of milliseconds -> **milliseconds**."""
    return _quantity(text, "ms", "latency") * 1e3


def parse_fraction(text: str) -> float:
    """``"10%"`` or ``"0.1"`` -> 0.1 (no range check); ``ValueError`` for anything else."""
    raw = text.strip()
    return float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)


def parse_rate_percent(text: str) -> float:
    """``"0.1%"`` or a fraction ``"0.001"`` -> a fraction in 0..1."""
    try:
        value = parse_fraction(text)
    except ValueError:
        raise UsageError(f"invalid error rate {text!r}: expected a percentage (0.1%) or a fraction (0.001)") from None
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"error rate {text!r} is outside 0%..100%")
    return value


def parse_levels(text: str) -> list[int]:
    """A sweep list ``"1,4,16,64"`` -> ``[1, 4, 16, 64]`` (positive integers, order kept)."""
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        raise UsageError(f"invalid level list {text!r}: expected integers like 1,4,16,64") from None
    if not levels or any(level < 1 for level in levels):
        raise UsageError(f"invalid level list {text!r}: expected positive integers like 1,4,16,64")
    return levels
