"""Three ``mlsrv serve`` replicas behind a real nginx, under mixed REST and gRPC load, while the fleet
is updated, restarted and loses a replica (``bench/fleet.py``, with short pauses).

nginx comes from Debian (``scripts/install_tools.sh``, run by ``make test``); the test starts and
stops it on loopback ports. Every wait in the fleet is bounded.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from bench.fleet import HALF_PLUS_TWO, run_fleet
from tests.server.process_server import http_get, serve_process
from tests.server.test_workers import predict, wait_until


@pytest.mark.skipif(not (HALF_PLUS_TWO / "saved_model.pb").is_file(), reason="example model missing")
def test_rolling_update_and_restart_lose_nothing_and_a_killed_replica_loses_only_its_calls(tmp_path: Path) -> None:
    result = run_fleet(tmp_path, settle_s=1.5, log=False)
    tally = result.tally
    steady, update, restart, killed = result.phases
    for phase in result.phases:
        assert tally.sent[(phase, "rest")] > 20 and tally.sent[(phase, "grpc")] > 20, phase  # load ran throughout
    assert result.failures(steady) == 0
    assert result.failures(update) == 0, tally.errors
    assert result.failures(restart) == 0, tally.errors
    # at most the calls in flight on the killed replica (4 REST + 4 gRPC streams), when nginx could not retry
    assert result.failures(killed) <= 8, tally.errors
    assert set(tally.phase_versions[steady]) == {1}
    assert set(tally.phase_versions[update]) <= {1, 2} and tally.phase_versions[update][2] > 0
    assert set(tally.phase_versions[restart]) == set(tally.phase_versions[killed]) == {2}  # never back to 1


def test_on_sigterm_readiness_turns_503_first_while_requests_are_still_served(tmp_path: Path) -> None:
    """``--drain_delay_seconds``: the window in which a load balancer polling /readyz takes the server out."""
    with serve_process(tmp_path, "--drain_delay_seconds=3") as server:
        server.process.send_signal(signal.SIGTERM)
        wait_until(lambda: http_get(server.rest_port, "/readyz", timeout=5) == (503, b'{"status": "draining"}'), 2,
                   "readiness to say draining")  # fmt: skip
        assert predict(server.rest_port) == 200 and http_get(server.rest_port, "/healthz", timeout=5)[0] == 200
        assert server.process.poll() is None
        assert server.process.wait(60) == 0
