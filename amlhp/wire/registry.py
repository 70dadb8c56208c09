"""Schemas as data: every wire schema's name, version and expected columns in one table.

:func:`amlhp.wire.from_ipc` knows nothing about any one schema: it looks the expected
name up in :data:`REGISTRY` and checks what it finds against the entry. Adding a schema
is a builder (in :mod:`amlhp.wire.packets` or :mod:`amlhp.wire.records`) plus one entry.

An entry's ``expected`` builds the schema this code reads *given the received one*, so
that parameters a reader cannot know in advance are taken from the message: the payload
width P of encoded batches, the names of the attribution entries of flow verdicts and
explanations. Column names, order and types must then match; nullability flags and extra
metadata keys do not matter (the non-nullable fields of the expected schema are checked
for nulls per batch instead).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import pyarrow as pa

from amlhp.wire import packets, records
from amlhp.wire.exceptions import BatchDecodeError


@dataclass(frozen=True)
class WireSchema:
    """One schema on the wire: the version this code writes and reads, the schema it
    expects given a received one, and an optional check of each decoded batch's rows
    beyond types and nulls (raising :class:`BatchDecodeError`)."""

    version: str
    expected: Callable[[pa.Schema], pa.Schema]
    check_rows: Callable[[pa.RecordBatch], None] | None = None


#: schema name -> its entry
REGISTRY: Final[dict[str, WireSchema]] = {
    packets.RAW: WireSchema(packets.RAW_VERSION, lambda _: packets.raw_schema()),
    packets.ENCODED: WireSchema(packets.ENCODED_VERSION, packets.encoded_like),
    packets.VERDICT: WireSchema(packets.VERDICT_VERSION, lambda _: packets.verdict_schema()),
    records.ALERT: WireSchema(records.ALERT_VERSION, lambda _: records.alert_schema()),
    records.DEVICE: WireSchema(records.DEVICE_VERSION, lambda _: records.device_schema()),
    records.FEEDBACK: WireSchema(records.FEEDBACK_VERSION, lambda _: records.feedback_schema()),
    records.DEAD_LETTER: WireSchema(
        records.DEAD_LETTER_VERSION, lambda _: records.dead_letter_schema()
    ),
    records.FLOW_VERDICT: WireSchema(records.FLOW_VERDICT_VERSION, records.flow_verdict_like),
    records.EXPLANATION: WireSchema(
        records.EXPLANATION_VERSION, records.explanation_like, records.check_explanation_rows
    ),
}


def entry(name: str) -> WireSchema:
    """The registry entry of ``name``; an unknown name raises :class:`BatchDecodeError`."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BatchDecodeError(f"unknown schema name {name!r}") from None


def schema_name(schema: pa.Schema) -> tuple[str | None, str | None]:
    """(name, version) from a schema's metadata, ``None`` where missing."""
    meta = schema.metadata or {}
    name = meta.get(b"schema")
    version = meta.get(b"version")
    return (
        name.decode("utf-8", "replace") if name is not None else None,
        version.decode("utf-8", "replace") if version is not None else None,
    )


def canonical_schema(name: str, received: pa.Schema) -> pa.Schema:
    """The schema this code expects for ``name`` (parameters taken from ``received``)."""
    return entry(name).expected(received)


def check_schema(schema: pa.Schema, expected: str) -> pa.Schema:
    """Raise :class:`BatchDecodeError` unless ``schema`` is ``expected`` at our version.

    Column names, order and types must match; nullability flags and extra metadata keys do
    not matter. Returns the schema this code expects (its non-nullable fields are the
    required ones).
    """
    spec = entry(expected)
    name, version = schema_name(schema)
    if name != expected:
        raise BatchDecodeError(f"expected a {expected!r} batch, got schema {name!r}")
    if version != spec.version:
        raise BatchDecodeError(
            f"{expected} schema version {version!r} is not supported "
            f"(this code reads version {spec.version!r})"
        )
    canonical = spec.expected(schema)
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in canonical]
    if got != want:
        raise BatchDecodeError(
            f"{expected} v{version} columns differ: got " + ", ".join(f"{n}:{t}" for n, t in got)
        )
    return canonical
