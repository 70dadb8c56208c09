"""Flow verdicts from Kafka to a hive-partitioned Parquet dataset, exactly once per file.

The layout and the durability protocol are the packet verdict dataset's
(:mod:`amlhp.streams.dataset`): ``<root>/date=YYYY-MM-DD/gateway=<id>/part-<topic>-
<partition>-<first>-<last>.parquet``, files first, then a manifest, then the offset commit;
on assignment orphans of an interrupted flush are removed and consumption resumes after
the last durable range. Only the decoding (flow verdict schema) differs, so this sink is a
small loop over those helpers rather than a copy of the packet sink.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from amlhp.flows.exceptions import FlowStateError
from amlhp.flows.online import decode_flow_verdicts
from amlhp.settings import Settings
from amlhp.streams import dataset
from amlhp.streams.kafka_io import committed_offsets, consumer_config

log = logging.getLogger(__name__)


@dataclass
class FlowSinkStats:
    messages: int = 0
    rows: int = 0
    files: int = 0
    flushes: int = 0
    bad_messages: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Buffer:
    first: int | None = None
    last: int | None = None
    started: float = 0.0
    batches: list[pa.RecordBatch] = field(default_factory=list)


class FlowVerdictSink:
    """Consumes the flow verdict topic and writes the dataset (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        out_dir: Path,
        *,
        group_id: str,
        roll_seconds: float = 5.0,
        compression: str = "zstd",
    ) -> None:
        from confluent_kafka import Consumer

        self.root = Path(out_dir)
        self.topic = settings.topic_flow_verdicts
        self.roll_seconds = roll_seconds
        self.compression = compression
        self.stats = FlowSinkStats()
        self._buffers: dict[int, _Buffer] = {}
        self._consumer = Consumer(
            consumer_config(settings, group_id=group_id, client_id="amlhp-flow-sink")
        )
        self.root.mkdir(parents=True, exist_ok=True)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        committed = {tp.partition: tp.offset for tp in committed_offsets(consumer, partitions)}
        for tp in partitions:
            dataset.remove_orphans(self.root, tp.topic, tp.partition)
            durable = dataset.manifests(self.root, tp.topic, tp.partition)
            if durable and committed.get(tp.partition, -1001) < durable[-1].last + 1:
                tp.offset = durable[-1].last + 1
            self._buffers[tp.partition] = _Buffer()
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._flush(tp.partition)
            self._buffers.pop(tp.partition, None)

    def _add(self, partition: int, offset: int, value: bytes | None) -> None:
        buf = self._buffers.setdefault(partition, _Buffer())
        if buf.first is None:
            buf.first, buf.started = offset, time.monotonic()
        buf.last = offset
        self.stats.messages += 1
        try:
            buf.batches.append(decode_flow_verdicts(value or b""))
        except FlowStateError as exc:
            self.stats.bad_messages += 1
            log.error("partition %d offset %d: %s", partition, offset, exc)

    def _flush(self, partition: int) -> None:
        from confluent_kafka import TopicPartition

        buf = self._buffers.get(partition)
        if buf is None or buf.first is None or buf.last is None:
            return
        rng = dataset.OffsetRange(self.topic, partition, buf.first, buf.last)
        rows = sum(b.num_rows for b in buf.batches)
        files = self._write(pa.Table.from_batches(buf.batches), rng) if rows else []
        dataset.write_manifest(self.root, rng, files, rows)
        self._consumer.commit(
            offsets=[TopicPartition(self.topic, partition, buf.last + 1)], asynchronous=False
        )
        self.stats.rows += rows
        self.stats.files += len(files)
        self.stats.flushes += 1
        self._buffers[partition] = _Buffer()

    def _write(self, table: pa.Table, rng: dataset.OffsetRange) -> list[Path]:
        ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype("datetime64[ns]")
        dates = np.datetime_as_string(ts, unit="D")
        gateways = np.asarray(table.column("gateway").to_pylist(), dtype=object)
        files = []
        data = table.drop_columns(["gateway"])
        for date, gateway in sorted(
            {(str(d), str(g)) for d, g in zip(dates, gateways, strict=True)}
        ):
            mask = pa.array((dates == date) & (gateways == gateway))
            sink = io.BytesIO()
            pq.write_table(data.filter(mask), sink, compression=self.compression)
            path = dataset.partition_dir(self.root, date, gateway) / dataset.data_file_name(rng)
            dataset.write_durably(path, sink.getvalue())
            files.append(path)
        return files

    def run(
        self, stop: threading.Event, on_progress: Callable[[FlowSinkStats], None] | None = None
    ) -> FlowSinkStats:
        """Consume until ``stop`` is set; then flush everything and close."""
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                for msg in self._consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is not None:
                        log.warning("consumer error: %s", msg.error())
                        continue
                    self._add(msg.partition() or 0, msg.offset() or 0, msg.value())
                for partition, buf in list(self._buffers.items()):
                    if (
                        buf.first is not None
                        and time.monotonic() - buf.started >= self.roll_seconds
                    ):
                        self._flush(partition)
                if on_progress is not None:
                    on_progress(self.stats)
            for partition in list(self._buffers):
                self._flush(partition)
        finally:
            self._consumer.close()
        return self.stats


def read_flow_verdicts(root: Path) -> pa.Table:
    """All durable flow verdicts under ``root`` (empty table when there are none)."""
    return dataset.read_verdicts(root)
