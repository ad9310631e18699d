"""Parse TF Serving's small text-format config files whose protos ``tensorflow-serving-api`` does not ship.

``SSLConfig`` and ``MonitoringConfig`` live in TF Serving's ``model_servers`` and ``config`` folders,
which the pip package leaves out. We describe each message (same package, names and field numbers as
the real ``.proto``) in a private ``DescriptorPool`` and let ``google.protobuf.text_format`` parse it,
so the grammar and the error messages are protobuf's own. No global state: each call builds its pool.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mlsrv.errors import ConfigError

_POSITION: Final = re.compile(r"^\d+:\d+ : ")


@dataclass(frozen=True, slots=True)
class Field:
    """One field: ``kind`` is ``"string"``, ``"bool"`` or the full name of another message in the file."""

    name: str
    number: int
    kind: str


@dataclass(frozen=True, slots=True)
class Message:
    name: str
    fields: Sequence[Field]


def parse(text: str, *, package: str, messages: Sequence[Message], root: str, source: str) -> Any:
    """Parse ``text`` as ``package.root`` (defined with ``messages``); ConfigError names ``source``."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

    fdp = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": fdp.TYPE_STRING, "bool": fdp.TYPE_BOOL}
    proto = descriptor_pb2.FileDescriptorProto(name=f"mlsrv/{package}/{root}.proto", package=package, syntax="proto3")
    for message in messages:
        described = proto.message_type.add(name=message.name)
        for field in message.fields:
            added = described.field.add(name=field.name, number=field.number, label=fdp.LABEL_OPTIONAL)
            if field.kind in scalar:
                added.type = scalar[field.kind]
            else:
                added.type, added.type_name = fdp.TYPE_MESSAGE, f".{package}.{field.kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    value = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.{root}"))()
    try:
        text_format.Parse(text, value)
    except text_format.ParseError as error:
        where = f"{source}:{error.GetLine()}:{error.GetColumn()}" if error.GetLine() else source
        reason = _POSITION.sub("", str(error))
        raise ConfigError(f"{where}: Error parsing text-format {package}.{root}: {reason}") from None
    return value


def read(path: str, what: str) -> str:
    """A config file's text, or ConfigError naming it."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"cannot read {what} file {path}: {reason}") from None
