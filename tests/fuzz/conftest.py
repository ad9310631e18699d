"""Property-based fuzzing (hypothesis) of every decoder a client or a config file can feed.

Each property says the same thing: *a clear 4xx / INVALID_ARGUMENT (or a usage/config error), or a
valid result; never an internal error, and within a bounded time*. The profile is seeded and
bounded so the suite is reproducible and fits CI: ``derandomize`` makes every run the same, and
``deadline`` fails any single example that takes longer than it (the super-linear cases the
hardening issue found took seconds to minutes).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mlsrv",
    derandomize=True,
    max_examples=300,
    deadline=2000,  # ms per example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
settings.load_profile("mlsrv")
