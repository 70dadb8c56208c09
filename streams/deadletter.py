"""Dead letters: what could not become a verdict, with its reason and its origin.

Errors are data here. A packet the encoder cannot represent, or a Kafka message that is
not a valid batch, becomes one row of a dead-letter batch on the dead-letter topic,
carrying the reason code, the stage that refused it and where it came from (topic,
partition, offset). Together with the verdicts this accounts for every packet that
entered the pipeline.

The schema (``amlhp.deadletter`` v1) is :func:`amlhp.wire.dead_letter_schema`; a reader
decodes the topic with ``amlhp.wire.from_ipc(value, amlhp.wire.DEAD_LETTER)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from amlhp.wire import dead_letter_schema

MAX_MESSAGE_BYTES_KEPT = 65_536

#: Reason of a Kafka message that is not a valid batch (the whole message is dead).
INVALID_BATCH = "invalid_batch"


@dataclass(frozen=True)
class Origin:
    """Where a Kafka message came from."""

    topic: str
    partition: int
    offset: int


def dead_message(
    origin: Origin,
    stage: str,
    detail: str,
    value: bytes | None,
    gateway: str | None,
    reason: str = INVALID_BATCH,
) -> pa.RecordBatch:
    """A dead letter for a whole message: not a valid batch (the default ``reason``), or
    one that a stage could not pass on (e.g. an export that its receiver refused)."""
    kept = (value or b"")[:MAX_MESSAGE_BYTES_KEPT]
    return pa.RecordBatch.from_pylist(
        [
            {
                "gateway": gateway,
                "seq": None,
                "ts_ns": None,
                "wire_len": None,
                "linktype": None,
                "reason": reason,
                "stage": stage,
                "origin_topic": origin.topic,
                "origin_partition": origin.partition,
                "origin_offset": origin.offset,
                "detail": detail[:1000],
                "data": kept,
            }
        ],
        schema=dead_letter_schema(),
    )


def dead_packets(
    rows: pa.RecordBatch,
    data: pa.Array | None,
    origin: Origin,
    stage: str,
    *,
    detail: str | None = None,
) -> pa.RecordBatch:
    """Dead letters for packets refused with a reason (``rows`` has a ``status`` column).

    ``data`` holds the packets' captured (already truncated) bytes when available;
    ``detail`` a sentence for every row.
    """
    n = rows.num_rows
    schema = dead_letter_schema()
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
            pa.array([detail[:1000]] * n, pa.string()) if detail else pa.nulls(n, pa.string()),
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
