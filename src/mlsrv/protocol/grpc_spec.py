"""ModelSpec <-> ``tensorflow.serving.ModelSpec``, with TF Serving's request checks (TF-free at import)."""

from __future__ import annotations

from typing import Any

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.types import ModelSpec


def spec_from_pb(pb: Any, *, has_field: bool, require_name: bool = True) -> ModelSpec:
    """A request's ModelSpec, with TF Serving's errors. GetModelStatus passes ``require_name=False``:
    TF answers it with NOT_FOUND for the empty name instead. ``version_label`` is kept even if empty."""
    if not has_field:
        raise InvalidArgument("Missing ModelSpec")
    if require_name and not pb.name:
        raise InvalidArgument("ModelSpec has no name specified.")
    return spec_of(pb)


def spec_to_pb(spec: ModelSpec, pb: Any) -> None:
    """Fill ``pb`` (a ModelSpec, present afterwards even when empty). Version wins over label."""
    pb.SetInParent()
    pb.name = spec.name
    if spec.version is not None:
        pb.version.value = spec.version
    elif spec.label is not None:
        pb.version_label = spec.label
    pb.signature_name = spec.signature


def spec_of(pb: Any) -> ModelSpec:
    choice = pb.WhichOneof("version_choice")
    return ModelSpec(
        name=pb.name,
        version=pb.version.value if choice == "version" else None,
        label=pb.version_label if choice == "version_label" else None,
        signature=pb.signature_name,
    )


def request_spec(request: Any, *, require_name: bool = True) -> ModelSpec:
    return spec_from_pb(request.model_spec, has_field=request.HasField("model_spec"), require_name=require_name)
