"""Parquet sink: verdict batches from Kafka -> a hive-partitioned Parquet dataset.

Exactly-once into files with at-least-once Kafka delivery: a flush of one partition's
buffered messages writes every file under a name derived from the offset range, then a
manifest, and only then commits the offsets. On (re)assignment the sink deletes files
that no manifest lists (an interrupted flush) and seeks past the last durable range,
so a crash at any point neither loses a verdict nor leaves a duplicate file.
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

from amlhp.encoders.exceptions import BatchDecodeError
from amlhp.encoders.schemas import VERDICT, from_ipc
from amlhp.settings import Settings
from amlhp.streams import dataset
from amlhp.streams.exceptions import SinkError
from amlhp.streams.kafka_io import committed_offsets, consumer_config
from amlhp.streams.metrics import STEP_SINK, process_metrics

log = logging.getLogger(__name__)


@dataclass
class _PartitionBuffer:
    first: int | None = None
    last: int | None = None
    rows: int = 0
    started: float = 0.0
    batches: list[pa.RecordBatch] = field(default_factory=list)


@dataclass
class SinkStats:
    messages: int = 0
    rows: int = 0
    files: int = 0
    flushes: int = 0
    bad_messages: int = 0
    orphans_removed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class ParquetSink:
    """Consumes the verdict topic and writes the dataset; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        out_dir: Path,
        *,
        group_id: str | None = None,
        topic: str | None = None,
        roll_rows: int = 200_000,
        roll_seconds: float = 5.0,
        compression: str = "zstd",
    ) -> None:
        from confluent_kafka import Consumer

        self.root = Path(out_dir)
        self.topic = topic or settings.topic_verdicts
        self.roll_rows = roll_rows
        self.roll_seconds = roll_seconds
        self.compression = compression
        self.stats = SinkStats()
        self._buffers: dict[int, _PartitionBuffer] = {}
        group = group_id or f"{settings.consumer_group}-sink"
        self._consumer = Consumer(consumer_config(settings, group_id=group, client_id="amlhp-sink"))
        self._metrics = process_metrics()  # served by `amlhp sink --metrics-port`
        self.root.mkdir(parents=True, exist_ok=True)

    # -- rebalancing ------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        committed = {tp.partition: tp.offset for tp in committed_offsets(consumer, partitions)}
        for tp in partitions:
            removed = dataset.remove_orphans(self.root, tp.topic, tp.partition)
            self.stats.orphans_removed += len(removed)
            for path in removed:
                log.warning("removed file of an interrupted flush: %s", path)
            durable = dataset.manifests(self.root, tp.topic, tp.partition)
            if durable:
                resume = durable[-1].last + 1
                if committed.get(tp.partition, -1001) < resume:
                    log.info(
                        "partition %d: resuming after durable offset %d", tp.partition, resume - 1
                    )
                    tp.offset = resume
            self._buffers[tp.partition] = _PartitionBuffer()
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self._flush(tp.partition)
            self._buffers.pop(tp.partition, None)

    # -- buffering and flushing --------------------------------------------------------
    def _add(self, partition: int, offset: int, value: bytes | None) -> None:
        buf = self._buffers.setdefault(partition, _PartitionBuffer())
        if buf.first is None:
            buf.first = offset
            buf.started = time.monotonic()
        buf.last = offset
        self.stats.messages += 1
        try:
            batch = from_ipc(value or b"", VERDICT)
        except BatchDecodeError as exc:
            # Not a verdict batch: counted and skipped; its offset still moves on.
            self.stats.bad_messages += 1
            self._metrics.skipped_messages.labels(STEP_SINK, "invalid_batch").inc()
            log.error("partition %d offset %d: not a verdict batch: %s", partition, offset, exc)
            return
        buf.batches.append(batch)
        buf.rows += batch.num_rows
        self._metrics.count_batch_in(STEP_SINK, batch, len(value or b""))

    def _due(self, buf: _PartitionBuffer) -> bool:
        if buf.first is None:
            return False
        return buf.rows >= self.roll_rows or time.monotonic() - buf.started >= self.roll_seconds

    def _flush(self, partition: int) -> None:
        buf = self._buffers.get(partition)
        if buf is None or buf.first is None or buf.last is None:
            return
        rng = dataset.OffsetRange(self.topic, partition, buf.first, buf.last)
        files: list[Path] = []
        table = None
        if buf.batches:
            table = pa.Table.from_batches(buf.batches)
            files = self._write_partitioned(table, rng)
        dataset.write_manifest(self.root, rng, files, buf.rows)
        from confluent_kafka import TopicPartition

        self._consumer.commit(
            offsets=[TopicPartition(self.topic, partition, buf.last + 1)], asynchronous=False
        )
        self.stats.rows += buf.rows
        self.stats.files += len(files)
        self.stats.flushes += 1
        if table is not None:
            self._metrics.record_stored(table, files, time.time_ns())
        self._buffers[partition] = _PartitionBuffer()

    def _write_partitioned(self, table: pa.Table, rng: dataset.OffsetRange) -> list[Path]:
        ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype("datetime64[ns]")
        dates = np.datetime_as_string(ts, unit="D")
        gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
        keys = np.char.add(np.char.add(dates, "|"), gateways)
        files = []
        data = table.drop_columns(["gateway"])
        for key in np.unique(keys):
            date, gateway = str(key).split("|", 1)
            mask = pa.array(keys == key)
            part = data.filter(mask)
            sink = io.BytesIO()
            pq.write_table(part, sink, compression=self.compression)
            path = dataset.partition_dir(self.root, date, gateway) / dataset.data_file_name(rng)
            dataset.write_durably(path, sink.getvalue())
            files.append(path)
        return files

    # -- main loop ---------------------------------------------------------------------
    def run(
        self,
        stop: threading.Event,
        on_progress: Callable[[SinkStats], None] | None = None,
    ) -> SinkStats:
        """Consume until ``stop`` is set; then flush everything and close."""
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                messages = self._consumer.consume(num_messages=500, timeout=0.2)
                for msg in messages:
                    if msg.error() is not None:
                        log.warning("consumer error: %s", msg.error())
                        continue
                    self._add(msg.partition() or 0, msg.offset() or 0, msg.value())
                for partition, buf in list(self._buffers.items()):
                    if self._due(buf):
                        self._flush(partition)
                if on_progress is not None:
                    on_progress(self.stats)
            for partition in list(self._buffers):
                self._flush(partition)
        except OSError as exc:
            raise SinkError(f"cannot write the dataset under {self.root}: {exc}") from exc
        finally:
            self._consumer.close()
        return self.stats
