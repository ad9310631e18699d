"""Version-transition policies: pure functions from one model's version snapshots to the next action.

These are TF Serving's ``AspiredVersionPolicy`` implementations (``availability_preserving_policy.cc``
and ``resource_preserving_policy.cc``) mapped onto the five manager states. The manager calls a
policy repeatedly, performing one action at a time, until it returns ``None``. Keeping them pure
makes them testable as data tables and lets a deployment swap them without touching the manager.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlsrv.protocol.types import State
from mlsrv.server.ids import ServableId

__all__ = [
    "Action",
    "Load",
    "Policy",
    "ServableId",
    "Snapshot",
    "Unload",
    "availability_preserving",
    "resource_preserving",
]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a policy sees of one version: its manager state and whether the source still wants it.

    ``State.START`` plays the role of TF's ``kNew`` (known, not yet loading) and ``State.END`` the
    role of ``kDisabled``/``kError`` (finished, successfully unloaded or failed).
    """

    id: ServableId
    state: State
    aspired: bool


@dataclass(frozen=True, slots=True)
class Load:
    id: ServableId


@dataclass(frozen=True, slots=True)
class Unload:
    id: ServableId


Action = Load | Unload
Policy = Callable[[Sequence[Snapshot]], Action | None]


def _highest_aspired_new(snapshots: Sequence[Snapshot]) -> ServableId | None:
    new = [s.id for s in snapshots if s.aspired and s.state is State.START]
    return max(new, key=lambda i: i.version, default=None)


def availability_preserving(snapshots: Sequence[Snapshot]) -> Action | None:
    """TF Serving's default policy: never drop the last serving version while its successor loads.

    Unload the lowest un-aspired AVAILABLE version when there is no aspired version at all, when an
    aspired version is already AVAILABLE, or when more than one un-aspired version is AVAILABLE.
    Otherwise load the highest aspired version that has not started loading. Peak memory holds two
    versions during a swap (TF Serving issue #1215); that is the price of availability.
    """
    has_aspired = any(s.aspired for s in snapshots)
    has_aspired_serving = any(s.aspired and s.state is State.AVAILABLE for s in snapshots)
    unaspired_serving = [s.id for s in snapshots if not s.aspired and s.state is State.AVAILABLE]
    if unaspired_serving and (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
        return Unload(min(unaspired_serving, key=lambda i: i.version))
    new = _highest_aspired_new(snapshots)
    return Load(new) if new is not None else None


def resource_preserving(snapshots: Sequence[Snapshot]) -> Action | None:
    """Unload every un-aspired version before loading anything (for hosts that fit one version).

    Availability drops between the unload of the old version and the end of the new one's load.
    """
    unaspired_serving = [s.id for s in snapshots if not s.aspired and s.state is State.AVAILABLE]
    if unaspired_serving:
        return Unload(min(unaspired_serving, key=lambda i: i.version))
    if any(not s.aspired and s.state is not State.END for s in snapshots):
        return None  # an un-aspired version is still on its way out (or in); wait for it
    new = _highest_aspired_new(snapshots)
    return Load(new) if new is not None else None
