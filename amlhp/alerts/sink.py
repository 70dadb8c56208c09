"""Parquet sink of the alerts: the alert topic -> ``out/alerts/``, exactly once per file.

The durability protocol is the shared core's (:mod:`amlhp.pipeline.parquet_sink`); this
writer only decodes ``amlhp.alert`` batches and counts the messages it skips. The files
are partitioned like the verdicts (by the UTC date of ``ts_ns`` and the gateway), so a
drill-down from an alert's ``sample_seqs`` to the verdicts reads the same partition.
"""

from __future__ import annotations

import pyarrow as pa

from amlhp.metrics.definitions import STEP_ALERT_SINK, process_metrics
from amlhp.pipeline.parquet_sink import PartitionedParquetSink
from amlhp.wire import ALERT, from_ipc


class AlertSink(PartitionedParquetSink):
    """Consumes the alert topic (group ``<consumer_group>-alerts-sink``), writes the dataset.

    The alert stage is at-least-once: after a crash it handles again the verdicts after
    its last commit and publishes the same alert rows again (same incident, same
    revision: its tables are restored to that commit). An incident's rows all carry its
    gateway as key, so they share a partition in revision order, and (``incident_id``,
    ``revision``) is the idempotency key the shared core drops re-deliveries by."""

    topic_setting = "topic_alerts"
    dedupe_on = ("incident_id", "revision")
    group_suffix = "alerts-sink"
    client_id = "amlhp-alert-sink"

    def decode(self, value: bytes) -> pa.RecordBatch:
        return from_ipc(value, ALERT)

    def on_batch(self, batch: pa.RecordBatch, size: int) -> None:
        process_metrics().count_batch_in(STEP_ALERT_SINK, batch, size)

    def on_bad_message(self, reason: str) -> None:
        process_metrics().skipped_messages.labels(STEP_ALERT_SINK, reason).inc()
