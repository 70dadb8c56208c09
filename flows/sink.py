"""Flow verdicts from Kafka to a date-partitioned Parquet dataset, exactly once per file.

The layout and the durability protocol are the packet verdict dataset's, written once in
:mod:`amlhp.pipeline.parquet_sink` (:mod:`amlhp.pipeline.dataset`), with the flow
worker's re-published verdicts dropped by (gateway, flow_seq):
``<root>/date=YYYY-MM-DD/part-<topic>-<partition>-<first>-<last>.parquet``,
files first, then a manifest, then the offset commit; on assignment orphans of an
interrupted flush are removed and consumption resumes after the last durable range. Only
the decoding (the flow verdict schema) is this writer's.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from amlhp.pipeline import dataset
from amlhp.pipeline.parquet_sink import PartitionedParquetSink
from amlhp.wire import FLOW_VERDICT, from_ipc


class FlowVerdictSink(PartitionedParquetSink):
    """Consumes the flow verdict topic (group ``<consumer_group>-flows-sink`` unless given)
    and writes the dataset (see the module docstring)."""

    topic_setting = "topic_flow_verdicts"
    group_suffix = "flows-sink"
    client_id = "amlhp-flow-sink"
    #: a restarted flow worker publishes again what it had published since its last
    #: state write, under the same (gateway, flow_seq) (see amlhp.flows.worker)
    dedupe_on = ("gateway", "flow_seq")

    def decode(self, value: bytes) -> pa.RecordBatch:
        return from_ipc(value, FLOW_VERDICT)


def read_flow_verdicts(root: Path) -> pa.Table:
    """All durable flow verdicts under ``root`` (empty table when there are none)."""
    return dataset.read_verdicts(root)


__all__ = ["FlowVerdictSink", "read_flow_verdicts"]
