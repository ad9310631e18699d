"""The typed configuration tree. Flags, ``mlsrv.toml`` and TF Serving's text-proto files become these
frozen dataclasses at one boundary (``load_config`` in ``mlsrv.config_loader``); nothing else reads files,
``sys.argv`` or the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Latest:
    """Serve the ``num_versions`` highest versions (TF Serving's default policy, with 1)."""

    num_versions: int = 1


@dataclass(frozen=True, slots=True)
class All:
    """Serve every version found."""


@dataclass(frozen=True, slots=True)
class Specific:
    """Serve exactly these versions (those that exist)."""

    versions: tuple[int, ...]


VersionPolicy = Latest | All | Specific


def _empty_labels() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """One model: TF Serving's ``ModelConfig`` (name, base_path, platform, policy, labels)."""

    name: str
    base_path: str
    platform: str = "tensorflow"
    version_policy: VersionPolicy = field(default_factory=Latest)
    version_labels: Mapping[str, int] = field(default_factory=_empty_labels)
