"""Consumer lag of a group, as Prometheus gauges, polled from Kafka in a background thread.

It exists because lag is the one pipeline metric no process can count itself: it is the
distance between what a consumer group committed and what its topics hold, so it needs
its own Kafka client: an assign-only consumer that never joins the group nor commits.
:class:`ConsumerLagCollector` computes it from the group's committed offsets and the
partitions' watermarks, plus the timestamp of the oldest unprocessed message for the lag
in seconds; a scrape only reads the last snapshot.

No admin client: confluent-kafka-python resolves admin futures in librdkafka's
background thread, and a garbage collection that runs there can destroy a client from
its own thread and crash the process (a SIGSEGV in ``rdk:bg``; see
confluentinc/confluent-kafka-python#2129). Every stage runs this collector, so it uses
only synchronous consumer calls, which run in the calling thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from amlhp.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one topic-partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    low: int
    high: int
    oldest_unprocessed_ts_ms: int | None = None

    @property
    def start(self) -> int:
        """Where the group resumes: its committed offset, or the log start when none."""
        if self.committed is None or self.committed < self.low:
            return self.low
        return self.committed

    @property
    def records(self) -> int:
        return max(0, self.high - self.start)

    def seconds(self, now_ms: int) -> float:
        """Age of the oldest unprocessed message (0 when caught up or unknown)."""
        if self.records == 0 or self.oldest_unprocessed_ts_ms is None:
            return 0.0
        return max(0.0, (now_ms - self.oldest_unprocessed_ts_ms) / 1000.0)


class ConsumerLagCollector(Collector):
    """Lag of one group on its topics, refreshed every ``interval_s`` in a thread.

    Committed offsets come from an assign-only consumer's ``committed`` (not the admin
    client's ``list_consumer_group_offsets``, which segfaults while the group's
    coordinator loads: librdkafka issue 5040), the log
    start and end (last stable offset) from ``AdminClient.list_offsets``; for each
    lagging partition one message is fetched at the committed offset with an
    assign-only consumer (it never joins the group nor commits) to read its timestamp.
    A scrape only reads the last snapshot, so it never waits for Kafka.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        *,
        interval_s: float = 5.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.errors = 0
        self._snapshot: list[PartitionLag] = []
        self._updated_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: Any = None

    # -- Kafka ---------------------------------------------------------------------------
    def _client(self) -> Any:
        """The reader: the group's id (so ``committed()`` reads the group's offsets), but
        assign-only with commits off, so it never joins the group nor moves its offsets."""
        from confluent_kafka import Consumer

        from amlhp.kafka_log import with_logger

        if self._reader is None:
            self._reader = Consumer(
                with_logger(
                    self.settings.kafka_config(
                        **{
                            "group.id": self.group,
                            "client.id": "amlhp-lag-reader",
                            "enable.auto.commit": False,
                            "enable.auto.offset.store": False,
                            "auto.offset.reset": "earliest",
                            "queued.max.messages.kbytes": 16384,
                        }
                    )
                )
            )
        return self._reader

    def poll_once(self) -> list[PartitionLag]:
        """Read offsets and oldest-message timestamps now; store and return the snapshot."""
        from confluent_kafka import TopicPartition

        reader = self._client()
        meta = reader.list_topics(timeout=self.timeout_s)
        tps = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in meta.topics
            for p in sorted(meta.topics[topic].partitions)
        ]
        if not tps:
            self._store([])
            return []
        committed = {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
            for tp in reader.committed(tps, timeout=self.timeout_s)
        }
        lags = []
        for tp in tps:
            key = (tp.topic, tp.partition)
            marks = reader.get_watermark_offsets(tp, timeout=self.timeout_s, cached=False)
            if marks is None:
                raise TimeoutError(f"no watermarks for {key} within {self.timeout_s} s")
            low, high = marks
            lags.append(PartitionLag(self.group, *key, committed.get(key), low, high))
        stamps = self._oldest_timestamps([lag for lag in lags if lag.records > 0])
        lags = [
            PartitionLag(
                lag.group,
                lag.topic,
                lag.partition,
                lag.committed,
                lag.low,
                lag.high,
                stamps.get((lag.topic, lag.partition)),
            )
            for lag in lags
        ]
        self._store(lags)
        return lags

    def _oldest_timestamps(self, lagging: list[PartitionLag]) -> dict[tuple[str, int], int]:
        """Timestamp (ms) of the message at each lagging partition's resume offset."""
        from confluent_kafka import TopicPartition

        if not lagging:
            return {}
        reader = self._client()
        reader.assign([TopicPartition(lag.topic, lag.partition, lag.start) for lag in lagging])
        wanted = {(lag.topic, lag.partition) for lag in lagging}
        found: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + min(self.timeout_s, 3.0)
        try:
            while wanted - set(found) and time.monotonic() < deadline:
                for msg in reader.consume(num_messages=len(wanted), timeout=0.2):
                    if msg.error() is not None:
                        continue
                    key = (msg.topic() or "", msg.partition() or 0)
                    if key in wanted and key not in found:
                        _, ts = msg.timestamp()
                        if ts >= 0:
                            found[key] = int(ts)
                        reader.pause([TopicPartition(key[0], key[1])])
        finally:
            reader.unassign()
        return found

    def _store(self, lags: list[PartitionLag]) -> None:
        with self._lock:
            self._snapshot = lags
            self._updated_at = time.time()

    @property
    def snapshot(self) -> list[PartitionLag]:
        with self._lock:
            return list(self._snapshot)

    # -- background thread ---------------------------------------------------------------
    def start(self) -> ConsumerLagCollector:
        self._thread = threading.Thread(target=self._run, name="amlhp-lag", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        while not self._stop.is_set():
            try:
                self.poll_once()
            except (KafkaException, TimeoutError, KeyError, ValueError, RuntimeError) as exc:
                # Kafka unreachable or a partition moving: keep the last snapshot, retry.
                self.errors += 1
                log.warning("consumer lag of %s not refreshed: %s", self.group, exc)
            self._stop.wait(self.interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 5)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- Prometheus ----------------------------------------------------------------------
    def describe(self) -> Iterable[Metric]:
        return list(self._families([], None))

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            lags, updated = list(self._snapshot), self._updated_at
        return list(self._families(lags, updated))

    def _families(self, lags: list[PartitionLag], updated: float | None) -> Iterator[Metric]:
        labels = ["group", "topic", "partition"]
        records = GaugeMetricFamily(
            "amlhp_consumer_lag_records",
            "Messages of a topic-partition the group has not processed (end - committed)",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "amlhp_consumer_lag_seconds",
            "Age of the oldest message of a topic-partition the group has not processed",
            labels=labels,
        )
        now_ms = int(time.time() * 1000)
        for lag in lags:
            key = [lag.group, lag.topic, str(lag.partition)]
            records.add_metric(key, float(lag.records))
            seconds.add_metric(key, lag.seconds(now_ms))
        yield records
        yield seconds
        age = GaugeMetricFamily(
            "amlhp_consumer_lag_snapshot_age_seconds",
            "Seconds since the lag was last read from Kafka",
            labels=["group"],
        )
        if updated is not None:
            age.add_metric([self.group], max(0.0, time.time() - updated))
        yield age
