"""Model status and metadata JSON (``GET /v1/models/{m}`` and ``.../metadata``), both directions.

TF Serving prints these protobufs as JSON with every field shown, int64 values as strings and a
one-space indent; the metadata nests ``signature_def`` twice. Key order follows TF Serving's
reference files (``half_plus_two_model_metadata.json``). The decoders are exact inverses and are
what the REST client uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlsrv.errors import InvalidArgument, TransportError, code_from_name
from mlsrv.protocol.json_parse import loads
from mlsrv.protocol.types import (
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, indent=1, ensure_ascii=False).encode("utf-8", "replace")


def encode_status(status: ModelStatus) -> bytes:
    """``{"model_version_status": [...]}``, highest version first, versions as strings."""
    versions = sorted(status.versions, key=lambda v: v.version, reverse=True)
    return _dump(
        {
            "model_version_status": [
                {
                    "version": str(v.version),
                    "state": v.state.name,
                    "status": {"error_code": v.error_code.name, "error_message": v.error_message},
                }
                for v in versions
            ]
        }
    )


def encode_model_list(statuses: list[ModelStatus], labels: Mapping[str, Mapping[str, int]] | None = None) -> bytes:
    """mlsrv extra ``GET /v1/models``: ``{"models": [{"name": m, "model_version_status": [...]}]}``.

    A model with version labels also gets ``"version_labels": {"stable": "3"}`` (the ``ModelConfig``
    field's name and its JSON form: int64 as a string), the only place a label's version shows.
    """
    models = []
    for status in statuses:
        entry = {"name": status.name, **json.loads(encode_status(status))}
        named = (labels or {}).get(status.name)
        if named:
            entry["version_labels"] = {label: str(version) for label, version in sorted(named.items())}
        models.append(entry)
    return _dump({"models": models})


def decode_model_list(body: bytes) -> list[ModelStatus]:
    """Inverse of :func:`encode_model_list` (client side)."""
    doc = response_object(body)
    models = doc.get("models")
    if not isinstance(models, list):
        raise TransportError("malformed model list: missing 'models' array")
    out = []
    for entry in models:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise TransportError("malformed model list entry")
        out.append(decode_status(json.dumps(entry).encode(), entry["name"]))
    return out


def _tensor_info(info: TensorInfo) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": info.dtype}
    if info.has_shape:
        if info.shape is None:
            out["tensor_shape"] = {"dim": [], "unknown_rank": True}
        else:
            out["tensor_shape"] = {"dim": [{"size": str(d), "name": ""} for d in info.shape], "unknown_rank": False}
    out["name"] = info.name
    return out


def _signature(sig: SignatureInfo) -> dict[str, Any]:
    return {
        "inputs": {alias: _tensor_info(info) for alias, info in sig.inputs.items()},
        "outputs": {alias: _tensor_info(info) for alias, info in sig.outputs.items()},
        "method_name": sig.method_name,
        # NOTE: TF Serving's own expected REST metadata for its TF2 half_plus_two export (whose
        # serving_default has an input default) shows "defaults": {}, so REST prints none; gRPC
        # metadata carries the defaults and Predict fills them in.
        "defaults": {},
    }



def encode_metadata(meta: ModelMetadata) -> bytes:
    """GetModelMetadata as TF Serving's REST API writes it (``signature_def`` nested twice)."""
    spec: dict[str, Any] = {"name": meta.spec.name, "signature_name": meta.spec.signature}
    if meta.spec.version is not None:
        spec["version"] = str(meta.spec.version)
    return _dump(
        {
            "model_spec": spec,
            "metadata": {
                "signature_def": {"signature_def": {name: _signature(sig) for name, sig in meta.signatures.items()}}
            },
        }
    )


def response_object(body: bytes) -> dict[str, Any]:
    """A server response body that must be a JSON object; anything else is a TransportError."""
    try:
        doc = loads(body)
    except InvalidArgument as exc:
        raise TransportError(f"invalid JSON in response: {exc.message}") from None
    if type(doc) is not dict:
        raise TransportError("response is not a JSON object")
    return doc


def decode_status(body: bytes, name: str = "") -> ModelStatus:
    """Inverse of :func:`encode_status`; ``name`` is not in the body, so the caller supplies it."""
    doc = response_object(body)
    try:
        versions = tuple(
            VersionStatus(
                version=int(entry["version"]),
                state=State[entry.get("state", "UNKNOWN")],
                error_code=code_from_name(entry.get("status", {}).get("error_code", "OK")),
                error_message=entry.get("status", {}).get("error_message", ""),
            )
            for entry in doc.get("model_version_status", [])
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransportError(f"malformed model status: {exc!r}") from None
    return ModelStatus(name=name, versions=versions)


def _tensor_info_from(doc: Mapping[str, Any]) -> TensorInfo:
    shape_doc = doc.get("tensor_shape")
    shape: tuple[int, ...] | None = None
    if shape_doc is not None and not shape_doc.get("unknown_rank", False):
        shape = tuple(int(d.get("size", "0")) for d in shape_doc.get("dim", []))
    return TensorInfo(
        name=doc.get("name", ""), dtype=doc.get("dtype", "DT_INVALID"), shape=shape, has_shape=shape_doc is not None
    )


def decode_metadata(body: bytes) -> ModelMetadata:
    """Inverse of :func:`encode_metadata`."""
    doc = response_object(body)
    try:
        spec_doc = doc.get("model_spec", {})
        version = spec_doc.get("version")
        spec = ModelSpec(
            name=spec_doc.get("name", ""),
            version=None if version is None else int(version),
            signature=spec_doc.get("signature_name", ""),
        )
        sig_docs = doc.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        signatures = {
            name: SignatureInfo(
                inputs={alias: _tensor_info_from(i) for alias, i in sig.get("inputs", {}).items()},
                outputs={alias: _tensor_info_from(o) for alias, o in sig.get("outputs", {}).items()},
                method_name=sig.get("method_name", ""),
            )
            for name, sig in sig_docs.items()
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TransportError(f"malformed model metadata: {exc!r}") from None
    return ModelMetadata(spec=spec, signatures=signatures)
