"""Versioned Apache Arrow schemas of the pipeline's records, and their Kafka wire format.

One Kafka message carries one batch of packets as one Arrow IPC stream (:func:`to_ipc`);
:func:`from_ipc` checks the schema name and version stored in the schema metadata and
turns any bad message into one :class:`BatchDecodeError`.

Schema metadata (all values UTF-8 bytes): ``schema`` (name), ``version``; encoded batches
add ``layout_version``, ``payload_bytes`` and ``mask_fields`` (comma separated) so that a
consumer can refuse batches encoded differently from what its model was trained on.

Raw packets, ``amlhp.raw`` v1:

============  =========  ======================================================
column        type       meaning
============  =========  ======================================================
gateway       string     the sensor/gateway that captured the packet
ts_ns         int64      capture timestamp, ns since the Unix epoch
seq           uint64     per-gateway sequence number, in capture order
linktype      uint16     pcap LINKTYPE of ``data`` (0xffff: unknown interface)
wire_len      uint32     length of the packet on the wire
data          binary     the captured bytes (link layer included, maybe truncated)
============  =========  ======================================================

Encoded packets, ``amlhp.encoded`` v1: ``gateway, ts_ns, seq, wire_len, linktype`` as above,
then the clear 5-tuple ``src_ip``/``dst_ip`` (string, dotted quad; null unless the IPv4
header was valid), ``src_port``/``dst_port`` (uint16; null unless a TCP/UDP header was
encoded), ``proto`` (uint8, null like the addresses), ``header`` (fixed_size_binary(128),
``h``; null unless ok), ``payload`` (fixed_size_binary(P), ``d``; null unless ok), ``status``
(string: ``ok`` or a reason code from :mod:`amlhp.encoders.reasons`).

Verdicts, ``amlhp.verdict`` v1: the identity, 5-tuple and ``status`` columns of the encoded
record, then

=============  ==============  ====================================================
column         type            meaning
=============  ==============  ====================================================
label          string          predicted class name (null when status is not ok)
class_id       int16           predicted class index (null when not scored)
score          float32         probability of the predicted class
probs          list<float32>   probabilities of all classes, in class-id order (nullable)
model_version  string          identity of the model that scored the packet
ingested_at_ns int64           when the raw batch entered Kafka (null if unknown)
encoded_at_ns  int64           when the packet was encoded (ns since epoch)
scored_at_ns   int64           when the verdict was produced (ns since epoch)
inference_ns   int64           model forward time of the packet's batch, in ns
=============  ==============  ====================================================
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from amlhp.encoders.exceptions import BatchDecodeError
from amlhp.encoders.layout import DEFAULT_MASK_FIELDS, HEADER_LEN, LAYOUT_VERSION

RAW: Final = "amlhp.raw"
ENCODED: Final = "amlhp.encoded"
VERDICT: Final = "amlhp.verdict"
#: schema name -> the version this code writes and reads
VERSIONS: Final[dict[str, str]] = {RAW: "1", ENCODED: "1", VERDICT: "1"}

IDENTITY_FIELDS: Final = (
    pa.field("gateway", pa.string(), nullable=False),
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("seq", pa.uint64(), nullable=False),
    pa.field("wire_len", pa.uint32(), nullable=False),
    pa.field("linktype", pa.uint16(), nullable=False),
)
FIVE_TUPLE_FIELDS: Final = (
    pa.field("src_ip", pa.string()),
    pa.field("dst_ip", pa.string()),
    pa.field("src_port", pa.uint16()),
    pa.field("dst_port", pa.uint16()),
    pa.field("proto", pa.uint8()),
)
STATUS_FIELD: Final = pa.field("status", pa.string(), nullable=False)


def _metadata(name: str, **extra: str) -> dict[bytes, bytes]:
    meta = {b"schema": name.encode(), b"version": VERSIONS[name].encode()}
    meta.update({k.encode(): v.encode() for k, v in extra.items()})
    return meta


def raw_schema() -> pa.Schema:
    """Schema of captured packets as the sensor publishes them."""
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("seq", pa.uint64(), nullable=False),
            pa.field("linktype", pa.uint16(), nullable=False),
            pa.field("wire_len", pa.uint32(), nullable=False),
            pa.field("data", pa.binary(), nullable=False),
        ],
        metadata=_metadata(RAW),
    )


def encoded_schema(
    payload_bytes: int, mask_fields: tuple[str, ...] = DEFAULT_MASK_FIELDS
) -> pa.Schema:
    """Schema of encoded packets with payload length P = ``payload_bytes``."""
    return pa.schema(
        [
            *IDENTITY_FIELDS,
            *FIVE_TUPLE_FIELDS,
            pa.field("header", pa.binary(HEADER_LEN)),
            pa.field("payload", pa.binary(payload_bytes)),
            STATUS_FIELD,
        ],
        metadata=_metadata(
            ENCODED,
            layout_version=LAYOUT_VERSION,
            payload_bytes=str(payload_bytes),
            mask_fields=",".join(mask_fields),
        ),
    )


def verdict_schema() -> pa.Schema:
    """Schema of per-packet verdicts (see the module docstring for the columns)."""
    return pa.schema(
        [
            *IDENTITY_FIELDS,
            *FIVE_TUPLE_FIELDS,
            STATUS_FIELD,
            pa.field("label", pa.string()),
            pa.field("class_id", pa.int16()),
            pa.field("score", pa.float32()),
            pa.field("probs", pa.list_(pa.float32())),
            pa.field("model_version", pa.string()),
            pa.field("ingested_at_ns", pa.int64()),
            pa.field("encoded_at_ns", pa.int64()),
            pa.field("scored_at_ns", pa.int64()),
            pa.field("inference_ns", pa.int64()),
        ],
        metadata=_metadata(VERDICT),
    )


def schema_name(schema: pa.Schema) -> tuple[str | None, str | None]:
    """(name, version) from a schema's metadata, ``None`` where missing."""
    meta = schema.metadata or {}
    name = meta.get(b"schema")
    version = meta.get(b"version")
    return (
        name.decode("utf-8", "replace") if name is not None else None,
        version.decode("utf-8", "replace") if version is not None else None,
    )


def payload_bytes_of(schema: pa.Schema) -> int:
    """P of an encoded schema, from the width of its ``payload`` column."""
    field = schema.field("payload")
    if not pa.types.is_fixed_size_binary(field.type):
        raise BatchDecodeError(f"payload column is {field.type}, not fixed_size_binary")
    return int(field.type.byte_width)


def canonical_schema(name: str, received: pa.Schema) -> pa.Schema:
    """The schema this code expects for ``name`` (P taken from ``received`` when encoded)."""
    if name == RAW:
        return raw_schema()
    if name == VERDICT:
        return verdict_schema()
    if name == ENCODED:
        if "payload" not in received.names:
            raise BatchDecodeError("encoded batch without a payload column")
        return encoded_schema(payload_bytes_of(received))
    raise BatchDecodeError(f"unknown schema name {name!r}")


def check_schema(schema: pa.Schema, expected: str) -> None:
    """Raise :class:`BatchDecodeError` unless ``schema`` is ``expected`` at our version.

    Column names, order and types must match; nullability flags and extra metadata keys do
    not matter.
    """
    name, version = schema_name(schema)
    if name != expected:
        raise BatchDecodeError(f"expected a {expected!r} batch, got schema {name!r}")
    if version != VERSIONS[expected]:
        raise BatchDecodeError(
            f"{expected} schema version {version!r} is not supported "
            f"(this code reads version {VERSIONS[expected]!r})"
        )
    canonical = canonical_schema(expected, schema)
    got = [(f.name, f.type) for f in schema]
    want = [(f.name, f.type) for f in canonical]
    if got != want:
        raise BatchDecodeError(
            f"{expected} v{version} columns differ: got " + ", ".join(f"{n}:{t}" for n, t in got)
        )


def to_ipc(batch: pa.RecordBatch, compression: str | None = None) -> bytes:
    """Serialise one batch as one Arrow IPC stream (one Kafka message value).

    ``compression`` may be ``"zstd"`` or ``"lz4"``; readers detect it by themselves.
    """
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def from_ipc(data: bytes, expected: str) -> pa.RecordBatch:
    """Deserialise one Kafka message into one batch of schema ``expected`` (a name).

    The batch references ``data`` without copying. Several batches in one stream are
    concatenated. Every failure (not Arrow, truncated, corrupt buffers, wrong schema name,
    version or columns) raises :class:`BatchDecodeError`.
    """
    if expected not in VERSIONS:
        raise BatchDecodeError(f"unknown schema name {expected!r}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BatchDecodeError(f"expected bytes, got {type(data).__name__}")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
        check_schema(schema, expected)
        batches = list(reader)
        required = [f.name for f in canonical_schema(expected, schema) if not f.nullable]
        for batch in batches:
            batch.validate(full=True)
            for name in required:
                if batch.column(name).null_count:
                    raise BatchDecodeError(f"{expected} column {name!r} holds nulls")
    except BatchDecodeError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OSError, KeyError, IndexError) as exc:
        raise BatchDecodeError(f"not a valid {expected} Arrow IPC stream: {exc}") from exc
    if len(batches) == 1:
        return batches[0]
    try:
        table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    except (pa.ArrowException, ValueError) as exc:
        raise BatchDecodeError(f"cannot combine the batches of a {expected} stream: {exc}") from exc
    combined = table.to_batches()
    if combined:
        return combined[0]
    return pa.RecordBatch.from_pylist([], schema=schema)
