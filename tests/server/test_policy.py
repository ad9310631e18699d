"""Policy tables, in the style of TF Serving's availability/resource_preserving_policy_test.cc."""

from __future__ import annotations

import pytest

from mlsrv.protocol.types import State
from mlsrv.server.policy import (
    Action,
    Load,
    ServableId,
    Snapshot,
    Unload,
    availability_preserving,
    resource_preserving,
)

S, L, A, U, E = State.START, State.LOADING, State.AVAILABLE, State.UNLOADING, State.END
Row = tuple[int, State, bool]


def snaps(rows: list[Row]) -> list[Snapshot]:
    return [Snapshot(ServableId("m", v), state, aspired) for v, state, aspired in rows]


def load(v: int) -> Action:
    return Load(ServableId("m", v))


def unload(v: int) -> Action:
    return Unload(ServableId("m", v))


AVAILABILITY_CASES: list[tuple[str, list[Row], Action | None]] = [
    ("empty", [], None),
    ("steady state", [(1, A, True)], None),
    ("loads the only new aspired", [(1, S, True)], load(1)),
    ("loads the highest new aspired first", [(1, S, True), (3, S, True), (2, S, True)], load(3)),
    ("unaspired serving kept while successor is new", [(1, A, False), (2, S, True)], load(2)),
    ("unaspired serving kept while successor loads", [(1, A, False), (2, L, True)], None),
    ("unaspired serving kept while successor failed", [(1, A, False), (2, E, True)], None),
    ("unloads unaspired once an aspired one serves", [(1, A, False), (2, A, True)], unload(1)),
    ("unload before load", [(1, A, False), (2, A, True), (3, S, True)], unload(1)),
    ("unloads lowest unaspired first", [(3, A, False), (1, A, False), (4, A, True)], unload(1)),
    ("several unaspired serving: unload lowest", [(2, A, False), (1, A, False), (3, S, True)], unload(1)),
    ("no aspired at all: unload even the last one", [(1, A, False)], unload(1)),
    ("no aspired: lowest of many", [(2, A, False), (1, A, False)], unload(1)),
    ("loading and unloading are left alone", [(1, U, False), (2, L, True)], None),
    ("new unaspired versions are never loaded", [(1, S, False)], None),
    ("failed aspired is not retried", [(1, E, True)], None),
    ("mixed", [(1, U, False), (2, A, True), (3, A, True), (4, S, True), (5, A, False)], unload(5)),
]


@pytest.mark.parametrize(
    ("rows", "expected"), [c[1:] for c in AVAILABILITY_CASES], ids=[c[0] for c in AVAILABILITY_CASES]
)
def test_availability_preserving(rows: list[Row], expected: Action | None) -> None:
    assert availability_preserving(snaps(rows)) == expected


RESOURCE_CASES: list[tuple[str, list[Row], Action | None]] = [
    ("empty", [], None),
    ("steady state", [(1, A, True)], None),
    ("loads the highest new aspired", [(1, S, True), (2, S, True)], load(2)),
    ("unloads the only version before loading", [(1, A, False), (2, S, True)], unload(1)),
    ("unloads lowest unaspired first", [(2, A, False), (1, A, False), (3, S, True)], unload(1)),
    ("waits while an unaspired one unloads", [(1, U, False), (2, S, True)], None),
    ("waits while an unaspired one loads", [(1, L, False), (2, S, True)], None),
    ("finished unaspired does not block", [(1, E, False), (2, S, True)], load(2)),
    ("failed aspired is not retried", [(1, E, True)], None),
]


@pytest.mark.parametrize(("rows", "expected"), [c[1:] for c in RESOURCE_CASES], ids=[c[0] for c in RESOURCE_CASES])
def test_resource_preserving(rows: list[Row], expected: Action | None) -> None:
    assert resource_preserving(snaps(rows)) == expected


def test_servable_id_prints_like_tf() -> None:
    assert str(ServableId("m", 3)) == "{name: m version: 3}"
