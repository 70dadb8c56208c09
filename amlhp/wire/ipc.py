"""The Kafka wire format: one Arrow IPC stream per message, and its one validating reader.

Every topic of the pipeline carries batches of a registered schema
(:data:`amlhp.wire.registry.REGISTRY`); every reader decodes them with :func:`from_ipc`,
so that a message from another schema, version or producer bug is refused the same way
everywhere: as one :class:`BatchDecodeError`, which the readers count or turn into a dead
letter, never a crash.
"""

from __future__ import annotations

import pyarrow as pa

from amlhp.wire.exceptions import BatchDecodeError
from amlhp.wire.registry import check_schema, entry


def to_ipc(batch: pa.RecordBatch, compression: str | None = None) -> bytes:
    """Serialise one batch as one Arrow IPC stream (one Kafka message value).

    ``compression`` may be ``"zstd"`` or ``"lz4"``; readers detect it by themselves.
    """
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_stream(sink, batch.schema, options=options) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


#: per expected schema name, the last schema that passed :func:`check_schema` and what
#: it returned: every message carries its schema, and a fleet's one-packet messages spent
#: a third of their decoding checking the same one again
_CHECKED: dict[str, tuple[pa.Schema, pa.Schema, list[str]]] = {}


def _checked_schema(schema: pa.Schema, expected_name: str) -> tuple[pa.Schema, list[str]]:
    """:func:`check_schema`, and the required (non-nullable) columns."""
    last = _CHECKED.get(expected_name)
    if last is not None and schema.equals(last[0], check_metadata=True):
        return last[1], last[2]
    canonical = check_schema(schema, expected_name)
    required = [f.name for f in canonical if not f.nullable]
    _CHECKED[expected_name] = (schema, canonical, required)
    return canonical, required


def from_ipc(data: bytes, expected_name: str) -> pa.RecordBatch:
    """Deserialise one Kafka message into one batch of the schema named ``expected_name``.

    Checks the schema name and version in the metadata, the column names and types, that
    required (non-nullable) columns hold no nulls, the buffers (``validate(full=True)``)
    and the schema's own row check. The batch references ``data`` without copying.
    Several batches in one stream are concatenated. Every failure raises
    :class:`BatchDecodeError`.
    """
    spec = entry(expected_name)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise BatchDecodeError(f"expected bytes, got {type(data).__name__}")
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        schema = reader.schema
        _, required = _checked_schema(schema, expected_name)
        batches = list(reader)
        for batch in batches:
            batch.validate(full=True)
            for name in required:
                if batch.column(name).null_count:
                    raise BatchDecodeError(f"{expected_name} column {name!r} holds nulls")
            if spec.check_rows is not None:
                spec.check_rows(batch)
    except BatchDecodeError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OSError, KeyError, IndexError) as exc:
        raise BatchDecodeError(f"not a valid {expected_name} Arrow IPC stream: {exc}") from exc
    if len(batches) == 1:
        return batches[0]
    try:
        table = pa.Table.from_batches(batches, schema=schema).combine_chunks()
    except (pa.ArrowException, ValueError) as exc:
        raise BatchDecodeError(
            f"cannot combine the batches of a {expected_name} stream: {exc}"
        ) from exc
    combined = table.to_batches()
    if combined:
        return combined[0]
    return pa.RecordBatch.from_pylist([], schema=schema)
