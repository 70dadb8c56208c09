"""The one Parquet sink core: record batches from a Kafka topic -> a date-partitioned dataset.

Every writer of a Parquet dataset from a topic (packet verdicts, flow verdicts, later
alerts and replays) needs the same durability protocol, so it is written once here and a
writer only says how a message value becomes a batch (and, if it serves metrics, hooks
them):

* messages are buffered per partition; a buffer is flushed when it holds ``roll_rows``
  rows or is ``roll_seconds`` old, when the partition is revoked, and at stop;
* a flush writes every file under a name derived from its offset range
  (:mod:`amlhp.pipeline.dataset`), then a manifest, and only then commits the offsets
  (flush-then-commit: at-least-once Kafka delivery, exactly once into files);
* on (re)assignment files that no manifest lists (an interrupted flush) are removed and,
  where the committed offset is behind the last durable range (a crash between manifest
  and commit), consumption resumes after that range;
* a writer that names ``dedupe_on`` (key, order) drops re-delivered rows: the producer
  side is at-least-once, and (gateway, seq) is the documented idempotency key
  (:class:`HighWaterMarks`).

So a crash at any point neither loses a record nor leaves a duplicate file. Because the
manifests, not the committed offsets, say where to resume, a commit that fails (the
broker or its group coordinator away for a while) is not fatal: it is counted, logged and
retried until it succeeds, while writing goes on. A flush that finds no space (ENOSPC)
removes what it wrote, pauses consumption and is retried every ``DISK_RETRY_S`` until
space returns; nothing is lost or kept half-written meanwhile. A message that
does not decode is counted as a bad message with a reason and logged; its offset still
moves on (it is covered by the next manifest), so one bad producer cannot stall the sink.
"""

from __future__ import annotations

import errno
import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from amlhp.pipeline import dataset
from amlhp.pipeline.exceptions import DiskFullError, SinkError
from amlhp.pipeline.kafka_io import consumer_config
from amlhp.settings import Settings
from amlhp.wire import BatchDecodeError

log = logging.getLogger(__name__)

#: The reason a message that is not a batch of the sink's schema is skipped with.
INVALID_BATCH = "invalid_batch"
#: how often a flush that found no space is tried again
DISK_RETRY_S = 2.0


@dataclass
class PartitionBuffer:
    """What one partition consumed since its last flush (offsets inclusive)."""

    first: int | None = None
    last: int | None = None
    rows: int = 0
    started: float = 0.0
    batches: list[pa.RecordBatch] = field(default_factory=list)


@dataclass
class SinkStats:
    """Counters of one sink run, reported by ``on_progress`` and returned by :meth:`run`."""

    messages: int = 0
    rows: int = 0
    files: int = 0
    flushes: int = 0
    bad_messages: int = 0
    orphans_removed: int = 0
    duplicates_dropped: int = 0
    commit_failures: int = 0
    disk_full: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def write_date_partitions(
    root: Path, table: pa.Table, rng: dataset.OffsetRange, compression: str
) -> list[Path]:
    """Write ``table`` as one file per UTC date of ``ts_ns``, durably, its rows sorted by
    gateway (a stable sort: each gateway's rows stay in arrival order)."""
    ts = table.column("ts_ns").to_numpy(zero_copy_only=False).astype("datetime64[ns]")
    dates = np.datetime_as_string(ts, unit="D")
    gateways = table.column("gateway").to_numpy(zero_copy_only=False).astype(str)
    order = np.lexsort((gateways, dates))  # by date, then gateway; stable
    dates = dates[order]
    data = table.take(pa.array(order))
    starts = np.flatnonzero(np.r_[True, dates[1:] != dates[:-1]])
    ends = np.r_[starts[1:], len(dates)]
    files = []
    for lo, hi in zip(starts.tolist(), ends.tolist(), strict=True):
        sink = io.BytesIO()
        pq.write_table(data.slice(lo, hi - lo), sink, compression=compression)
        path = dataset.date_dir(root, str(dates[lo])) / dataset.data_file_name(rng)
        dataset.write_durably(path, sink.getvalue())
        files.append(path)
    return files


def resume_after_durable(root: Path, topic: str, partition: int) -> tuple[int | None, list[Path]]:
    """Make one partition's files consistent after a crash, before consuming it again.

    Removes the data files no manifest lists (an interrupted flush) and returns the
    offset after the last durable range (``None`` when nothing is durable) with the
    removed files. The live sinks and the replay resume through here.
    """
    removed = dataset.remove_orphans(root, topic, partition)
    for path in removed:
        log.warning("removed file of an interrupted flush: %s", path)
    durable = dataset.manifests(root, topic, partition)
    return (durable[-1].last + 1 if durable else None), removed


@dataclass
class HighWaterMarks:
    """Exactly once out of at-least-once delivery, for one partition of the topic.

    Rows carry a key (``gateway``) and a per-key order (``seq``) that grows along the
    partition: a worker that crashed or lost its partitions publishes again what it had
    published after its last commit, so a row whose order is not above its key's mark
    is a re-delivery and is dropped. The marks are saved in every flush's manifest and
    reloaded on assignment, so they are exactly what is durable.
    """

    key: str
    order: str
    marks: dict[str, int] = field(default_factory=dict)

    def keep_new(self, batch: pa.RecordBatch) -> tuple[pa.RecordBatch, int]:
        """``batch`` without its re-delivered rows, and how many were dropped.

        A row is new when its order is above its key's mark and it is the first row of
        the batch with that (key, order): a worker that lost and regained a partition
        mid-micro-batch can score one message twice into a single batch."""
        if batch.num_rows == 0:
            return batch, 0
        keys = np.asarray(batch.column(self.key).to_pylist(), dtype=object)
        order = batch.column(self.order).to_numpy(zero_copy_only=False).astype(np.int64)
        keep = np.zeros(batch.num_rows, dtype=bool)
        for key in dict.fromkeys(keys.tolist()):
            rows = np.flatnonzero(keys == key)
            mark = self.marks.get(str(key))
            if mark is not None:
                rows = rows[order[rows] > mark]
            if rows.size == 0:
                continue
            _, first = np.unique(order[rows], return_index=True)
            keep[rows[first]] = True
            self.marks[str(key)] = int(order[rows].max())
        if keep.all():
            return batch, 0
        kept = batch.filter(pa.array(keep))
        return kept, batch.num_rows - kept.num_rows


class PartitionedParquetSink:
    """Consumes a topic as a consumer group and writes the dataset under ``out_dir``.

    A writer subclasses it, names its defaults in the class attributes (the settings field
    of its topic, its group's suffix, its client id; constructor arguments win), overrides
    :meth:`decode`, and may override the hooks :meth:`on_batch`,
    :meth:`on_bad_message` and :meth:`on_stored` (metrics) and :meth:`write` (another
    partitioning).
    """

    #: the :class:`~amlhp.settings.Settings` field naming the default topic
    topic_setting: ClassVar[str | None] = None
    #: the default group is ``<settings.consumer_group>-<group_suffix>``
    group_suffix: ClassVar[str] = "sink"
    #: the consumer's librdkafka ``client.id`` by default
    client_id: ClassVar[str] = "amlhp-parquet-sink"
    #: (key column, order column) of :class:`HighWaterMarks` de-duplication, or None
    dedupe_on: ClassVar[tuple[str, str] | None] = None

    def __init__(
        self,
        settings: Settings,
        out_dir: Path,
        *,
        topic: str | None = None,
        group_id: str | None = None,
        client_id: str | None = None,
        roll_rows: int = 200_000,
        roll_seconds: float = 5.0,
        compression: str = "zstd",
    ) -> None:
        from confluent_kafka import Consumer

        if topic is None and self.topic_setting is None:
            raise TypeError(f"{type(self).__name__} needs topic= or a topic_setting")
        self.root = Path(out_dir)
        self.topic = topic or str(getattr(settings, str(self.topic_setting)))
        self.roll_rows = roll_rows
        self.roll_seconds = roll_seconds
        self.compression = compression
        self.stats = SinkStats()
        self._buffers: dict[int, PartitionBuffer] = {}
        self._marks: dict[int, HighWaterMarks] = {}
        self._uncommitted: dict[int, int] = {}  # partition -> offset whose commit failed
        self._commit_retry_at = 0.0
        self._paused = False  # no space for a flush: consumption waits for it
        self._flush_retry_at = 0.0
        group = group_id or f"{settings.consumer_group}-{self.group_suffix}"
        self._consumer = Consumer(
            consumer_config(settings, group_id=group, client_id=client_id or self.client_id)
        )
        self.root.mkdir(parents=True, exist_ok=True)

    # -- what a writer says ------------------------------------------------------------
    def decode(self, value: bytes) -> pa.RecordBatch:
        """One message value -> one batch; raises :class:`BatchDecodeError` when it is not."""
        raise NotImplementedError(f"{type(self).__name__} must say how it decodes a message")

    def write(self, table: pa.Table, rng: dataset.OffsetRange) -> list[Path]:
        """Write one flush's rows durably; returns the files (default: one per date)."""
        return write_date_partitions(self.root, table, rng, self.compression)

    def on_batch(self, batch: pa.RecordBatch, size: int) -> None:
        """Hook: a message of ``size`` bytes decoded into ``batch``."""

    def on_bad_message(self, reason: str) -> None:
        """Hook: a message was skipped for ``reason``."""

    def on_stored(self, table: pa.Table, files: list[Path]) -> None:
        """Hook: ``table`` is durable in ``files`` and its offsets are committed."""

    # -- rebalancing ------------------------------------------------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """Resume each partition after what the dataset holds durably.

        The manifests, not the group's committed offset, say where: a flush commits only
        after its manifest is written, so the committed offset is never past them, and a
        partition without a manifest starts at the committed offset (librdkafka's default).
        No broker call is made here: ``committed()`` inside the rebalance callback blocks
        the callback while a fresh broker's group coordinator loads."""
        for tp in partitions:
            resume, removed = resume_after_durable(self.root, tp.topic, tp.partition)
            self.stats.orphans_removed += len(removed)
            if resume is not None:
                log.info(
                    "%s partition %d: resuming after durable offset %d",
                    tp.topic,
                    tp.partition,
                    resume - 1,
                )
                tp.offset = resume
            self._buffers[tp.partition] = PartitionBuffer()
            if self.dedupe_on is not None:
                self._marks[tp.partition] = self._durable_marks(tp.topic, tp.partition)
        consumer.assign(partitions)

    def _durable_marks(self, topic: str, partition: int) -> HighWaterMarks:
        assert self.dedupe_on is not None
        key, order = self.dedupe_on
        durable = dataset.manifests(self.root, topic, partition)
        saved = dataset.read_manifest(self.root, durable[-1]).get("marks", {}) if durable else {}
        return HighWaterMarks(key, order, {str(k): int(v) for k, v in saved.items()})

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        del consumer
        for tp in partitions:
            try:
                self._flush(tp.partition)
            except DiskFullError as exc:  # not committed: the next owner reads them again
                log.error("%s; partition revoked, its rows are left to the next owner", exc)
            self._buffers.pop(tp.partition, None)
        self._commit()
        for tp in partitions:  # never commit for a partition another member now owns
            self._uncommitted.pop(tp.partition, None)

    # -- buffering and flushing --------------------------------------------------------
    def _add(self, partition: int, offset: int, value: bytes | None) -> None:
        buf = self._buffers.setdefault(partition, PartitionBuffer())
        if buf.first is None:
            buf.first = offset
            buf.started = time.monotonic()
        buf.last = offset
        self.stats.messages += 1
        try:
            batch = self.decode(value or b"")
        except BatchDecodeError as exc:
            self.stats.bad_messages += 1
            self.on_bad_message(INVALID_BATCH)
            log.error(
                "%s partition %d offset %d skipped (%s): %s",
                self.topic,
                partition,
                offset,
                INVALID_BATCH,
                exc,
            )
            return
        self.on_batch(batch, len(value or b""))
        marks = self._marks.get(partition)
        if marks is not None:
            batch, dropped = marks.keep_new(batch)
            if dropped:
                self.stats.duplicates_dropped += dropped
                log.info("%s partition %d offset %d: %d re-delivered rows dropped",
                         self.topic, partition, offset, dropped)  # fmt: skip
        if batch.num_rows:
            buf.batches.append(batch)
            buf.rows += batch.num_rows

    def _due(self, buf: PartitionBuffer) -> bool:
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
        marks = self._marks.get(partition)
        extra: dict[str, Any] = {} if marks is None else {"marks": dict(marks.marks)}
        started = time.monotonic()
        try:
            if buf.batches:
                table = pa.Table.from_batches(buf.batches)
                files = self.write(table, rng)
            # how long the data files took: an operator's first look when flushes lag
            extra["write_s"] = round(time.monotonic() - started, 4)
            dataset.write_manifest(self.root, rng, files, buf.rows, **extra)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # what this flush wrote is not durable: no manifest lists it, so it goes now
            dataset.remove_orphans(self.root, self.topic, partition)
            raise DiskFullError(
                f"no space left under {self.root}: {buf.rows} rows of {self.topic} "
                f"partition {partition} (offsets {buf.first}-{buf.last}) wait for it"
            ) from exc
        self._uncommitted[partition] = buf.last + 1
        self._commit()
        self.stats.rows += buf.rows
        self.stats.files += len(files)
        self.stats.flushes += 1
        if table is not None:
            self.on_stored(table, files)
        self._buffers[partition] = PartitionBuffer()

    def _flush_due(self) -> None:
        """Flush the due buffers. Without space, consumption pauses (the buffers must not
        grow) and the flush is retried every ``DISK_RETRY_S``; it resumes once one works."""
        try:
            for partition, buf in list(self._buffers.items()):
                if self._due(buf):
                    self._flush(partition)
        except DiskFullError as exc:
            self.stats.disk_full += 1
            self._flush_retry_at = time.monotonic() + DISK_RETRY_S
            self._consumer.pause(self._consumer.assignment())  # again after a rebalance
            if not self._paused:
                self._paused = True
                log.error("%s; consumption paused, retrying every %.0f s", exc, DISK_RETRY_S)
            return
        if self._paused:
            self._consumer.resume(self._consumer.assignment())
            self._paused = False
            log.warning("%s: space again, consumption resumed", self.root)

    def _commit(self) -> None:
        """Commit every durable offset not committed yet; on failure keep them for a retry.

        A failed commit costs nothing but a longer re-read after a crash: the next owner
        resumes after the manifests, and re-read rows are dropped or rewritten under the
        same file names. A fatal error (the client cannot go on) is raised."""
        from confluent_kafka import KafkaException, TopicPartition

        if not self._uncommitted:
            return
        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(self._uncommitted.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and hasattr(error, "fatal") and error.fatal():
                raise SinkError(f"{self.topic}: fatal Kafka error on commit: {error}") from exc
            self.stats.commit_failures += 1
            self._commit_retry_at = time.monotonic() + 1.0
            log.warning("%s: commit of %d partition(s) failed, retried later: %s",
                        self.topic, len(offsets), error)  # fmt: skip
            return
        self._uncommitted.clear()

    def _close(self) -> None:
        from confluent_kafka import KafkaException

        try:
            self._commit()
            self._consumer.close()
        except KafkaException as exc:  # the manifests hold the progress: say so and go
            log.warning("%s: closing the consumer failed (%s); %d partition(s) resume from "
                        "the manifests", self.topic, exc, len(self._uncommitted))  # fmt: skip

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
                # paused partitions return nothing, but the call keeps the member alive
                for msg in self._consumer.consume(num_messages=500, timeout=0.2):
                    if msg.error() is not None:
                        log.warning("consumer error: %s", msg.error())
                        continue
                    self._add(msg.partition() or 0, msg.offset() or 0, msg.value())
                if time.monotonic() >= self._flush_retry_at:
                    self._flush_due()
                if self._uncommitted and time.monotonic() >= self._commit_retry_at:
                    self._commit()
                if on_progress is not None:
                    on_progress(self.stats)
            for partition in list(self._buffers):
                self._flush(partition)
        except DiskFullError as exc:
            raise SinkError(f"stopped with rows not durable ({exc}); they are read again "
                            "at the next start") from exc  # fmt: skip
        except OSError as exc:
            raise SinkError(f"cannot write the dataset under {self.root}: {exc}") from exc
        finally:
            self._close()
        return self.stats
