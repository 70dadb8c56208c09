"""Dead letters: what could not become a verdict, with its reason and its origin.

Errors are data here. A packet the encoder cannot represent, or a Kafka message that is
not a valid batch, becomes one row of a dead-letter batch on the dead-letter topic,
carrying the reason code, the stage that refused it and where it came from (topic,
partition, offset). Together with the verdicts this accounts for every packet that
entered the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

SCHEMA_NAME = "amlhp.deadletter"
SCHEMA_VERSION = "1"
MAX_MESSAGE_BYTES_KEPT = 65_536

#: Reason of a Kafka message that is not a valid batch (the whole message is dead).
INVALID_BATCH = "invalid_batch"


def deadletter_schema() -> pa.Schema:
    """One row per dead packet (``seq`` set) or per dead message (``seq`` null)."""
    return pa.schema(
        [
            pa.field("gateway", pa.string()),
            pa.field("seq", pa.uint64()),
            pa.field("ts_ns", pa.int64()),
            pa.field("wire_len", pa.uint32()),
            pa.field("linktype", pa.uint16()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("origin_topic", pa.string(), nullable=False),
            pa.field("origin_partition", pa.int32(), nullable=False),
            pa.field("origin_offset", pa.int64(), nullable=False),
            pa.field("detail", pa.string()),
            pa.field("data", pa.binary()),
        ],
        metadata={b"schema": SCHEMA_NAME.encode(), b"version": SCHEMA_VERSION.encode()},
    )


@dataclass(frozen=True)
class Origin:
    """Where a Kafka message came from."""

    topic: str
    partition: int
    offset: int


def dead_message(
    origin: Origin, stage: str, detail: str, value: bytes | None, gateway: str | None
) -> pa.RecordBatch:
    """A dead letter for a whole message that is not a valid batch."""
    kept = (value or b"")[:MAX_MESSAGE_BYTES_KEPT]
    return pa.RecordBatch.from_pylist(
        [
            {
                "gateway": gateway,
                "seq": None,
                "ts_ns": None,
                "wire_len": None,
                "linktype": None,
                "reason": INVALID_BATCH,
                "stage": stage,
                "origin_topic": origin.topic,
                "origin_partition": origin.partition,
                "origin_offset": origin.offset,
                "detail": detail[:1000],
                "data": kept,
            }
        ],
        schema=deadletter_schema(),
    )


def dead_packets(
    rows: pa.RecordBatch, data: pa.Array | None, origin: Origin, stage: str
) -> pa.RecordBatch:
    """Dead letters for packets refused with a reason (``rows`` has a ``status`` column).

    ``data`` holds the packets' captured (already truncated) bytes when available.
    """
    n = rows.num_rows
    schema = deadletter_schema()
    return pa.RecordBatch.from_arrays(
        [
            rows.column("gateway").cast(pa.string()),
            rows.column("seq").cast(pa.uint64()),
            rows.column("ts_ns").cast(pa.int64()),
            rows.column("wire_len").cast(pa.uint32()),
            rows.column("linktype").cast(pa.uint16()),
            rows.column("status").cast(pa.string()),
            pa.array([stage] * n, pa.string()),
            pa.array([origin.topic] * n, pa.string()),
            pa.array([origin.partition] * n, pa.int32()),
            pa.array([origin.offset] * n, pa.int64()),
            pa.nulls(n, pa.string()),
            data if data is not None else pa.nulls(n, pa.binary()),
        ],
        schema=schema,
    )


def reason_counts(batch: pa.RecordBatch | pa.Table) -> dict[str, int]:
    """Dead letters per reason code."""
    if batch.num_rows == 0:
        return {}
    counts = pc.value_counts(batch.column("reason"))
    return {str(item["values"]): int(item["counts"]) for item in counts.to_pylist()}


def decode_dead(data: bytes) -> pa.RecordBatch:
    """Decode one dead-letter message; raises ``BatchDecodeError`` when it is not one."""
    from amlhp.encoders.exceptions import BatchDecodeError

    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        meta = reader.schema.metadata or {}
        if meta.get(b"schema") != SCHEMA_NAME.encode():
            raise BatchDecodeError(f"not a {SCHEMA_NAME} batch")
        if meta.get(b"version") != SCHEMA_VERSION.encode():
            raise BatchDecodeError(f"unsupported {SCHEMA_NAME} version {meta.get(b'version')!r}")
        table = reader.read_all()
    except BatchDecodeError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
        raise BatchDecodeError(f"not a valid {SCHEMA_NAME} stream: {exc}") from exc
    if table.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=deadletter_schema())
    return table.combine_chunks().to_batches()[0]
