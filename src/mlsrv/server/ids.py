"""``ServableId``: the name of one model version, shared by the source, manager, policy and monitor."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class ServableId:
    """One version of one model (TF Serving's ``ServableId``). Ordered by (name, version)."""

    name: str
    version: int

    def __str__(self) -> str:
        """TF's ``ServableId::DebugString`` form, used in startup and reload error messages."""
        return f"{{name: {self.name} version: {self.version}}}"
