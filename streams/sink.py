"""Parquet sink of the packet verdicts: the verdict topic -> ``out/verdicts/``.

The durability protocol (offset-range files, manifests, orphan removal, resume,
flush-then-commit) is the shared core's, :mod:`amlhp.pipeline.parquet_sink`; this writer
only decodes verdict batches and reports them on the process's Prometheus metrics
(served by ``amlhp sink --metrics-port``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from amlhp.metrics.definitions import STEP_SINK, process_metrics
from amlhp.pipeline.parquet_sink import PartitionedParquetSink, SinkStats
from amlhp.wire import VERDICT, from_ipc

__all__ = ["ParquetSink", "SinkStats"]


class ParquetSink(PartitionedParquetSink):
    """Consumes the verdict topic (group ``<consumer_group>-sink``), writes the dataset."""

    topic_setting = "topic_verdicts"
    group_suffix = "sink"
    client_id = "amlhp-sink"
    # a restarted or rebalanced worker publishes again what it had published after its
    # last commit: (gateway, seq) identifies a packet, so those rows are dropped here
    dedupe_on = ("gateway", "seq")

    def decode(self, value: bytes) -> pa.RecordBatch:
        return from_ipc(value, VERDICT)

    def on_batch(self, batch: pa.RecordBatch, size: int) -> None:
        process_metrics().count_batch_in(STEP_SINK, batch, size)

    def on_bad_message(self, reason: str) -> None:
        process_metrics().skipped_messages.labels(STEP_SINK, reason).inc()

    def on_stored(self, table: pa.Table, files: list[Path]) -> None:
        process_metrics().record_stored(table, files, time.time_ns())
