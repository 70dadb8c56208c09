"""A background sampler: consumer lag and per-process CPU time, once a second.

Lag in records is, per topic-partition, the high watermark minus the group's committed
offset, summed over the worker's group (raw and encoded topics) and over the sink's
group (verdict topic). Lag in seconds is the age of the oldest message a group has not
committed: when that message was appended is estimated from the history of high
watermarks this sampler has seen (linear interpolation between two samples, as Burrow
and kafka-lag-exporter do), so no message has to be fetched and a sample costs two
admin requests. The estimate's resolution is the sampling interval. CPU time comes from
``/proc`` and is read first, at the sample's timestamp. Each sample is one flat dict, so
a run's time series is a plain list in the result JSON.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from amlhp.benchmarks.machine import machine_busy_seconds, process_cpu_seconds
from amlhp.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupWatch:
    """One consumer group and the topics whose lag it owns."""

    name: str  # short name in the samples: "worker", "sink"
    group: str
    topics: tuple[str, ...]


@dataclass
class OffsetHistory:
    """High watermarks of one partition over time, to date when an offset was appended."""

    times: list[float] = field(default_factory=list)
    highs: list[int] = field(default_factory=list)

    def add(self, t: float, high: int) -> None:
        if self.highs and high < self.highs[-1]:
            return  # a lower watermark (a stale answer) never moves history backwards
        self.times.append(t)
        self.highs.append(high)

    def appended_at(self, offset: int) -> float | None:
        """Estimated time at which message ``offset`` was appended (``None``: not yet).

        Message ``offset`` exists once the high watermark exceeds it; between two samples
        the appends are taken as evenly spread. Before the first sample the first
        sample's time is a lower bound of the age.
        """
        i = bisect.bisect_right(self.highs, offset)
        if i >= len(self.highs):
            return None
        if i == 0:
            return self.times[0]
        h0, h1 = self.highs[i - 1], self.highs[i]
        t0, t1 = self.times[i - 1], self.times[i]
        return t0 + (offset - h0 + 1) / (h1 - h0) * (t1 - t0)


@dataclass
class Sampler:
    """Samples every ``interval_s`` in a daemon thread until :meth:`close`."""

    settings: Settings
    groups: list[GroupWatch]
    processes: dict[str, int] = field(default_factory=dict)  # name -> pid
    interval_s: float = 1.0
    timeout_s: float = 5.0
    samples: list[dict[str, Any]] = field(default_factory=list)
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _admin: Any = None
    _readers: dict[str, Any] = field(default_factory=dict)
    _partitions: dict[str, list[int]] = field(default_factory=dict)
    _history: dict[tuple[str, int], OffsetHistory] = field(default_factory=dict)

    def watch(self, name: str, pid: int) -> None:
        """Add a process (for example a tap started later) to the CPU samples."""
        with self._lock:
            self.processes[name] = pid

    def unwatch(self, name: str) -> None:
        with self._lock:
            self.processes.pop(name, None)

    def _reader(self, group: str) -> Any:
        """An assign-only consumer of ``group`` (never subscribes, never commits): reads
        the group's committed offsets without joining it."""
        from confluent_kafka import Consumer

        if group not in self._readers:
            self._readers[group] = Consumer(
                self.settings.kafka_config(
                    **{"group.id": group, "client.id": "amlhp-bench-lag",
                       "enable.auto.commit": False}
                )
            )  # fmt: skip
        return self._readers[group]

    def start(self) -> Sampler:
        from confluent_kafka.admin import AdminClient

        self._admin = AdminClient(self.settings.kafka_config(**{"client.id": "amlhp-bench-lag"}))
        meta = self._admin.list_topics(timeout=self.timeout_s)
        for watch in self.groups:
            for topic in watch.topics:
                if topic in meta.topics:
                    self._partitions[topic] = sorted(meta.topics[topic].partitions)
        self._thread = threading.Thread(target=self._run, name="amlhp-bench-sampler", daemon=True)
        self._thread.start()
        return self

    def _read_offsets(
        self,
    ) -> tuple[dict[tuple[str, int], int], dict[str, dict[tuple[str, int], int | None]]]:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        tps = [TopicPartition(t, p) for t, parts in self._partitions.items() for p in parts]
        committed: dict[str, dict[tuple[str, int], int | None]] = {}
        for watch in self.groups:
            mine = [tp for tp in tps if tp.topic in watch.topics]
            # a consumer's committed(), not the admin client's ListConsumerGroupOffsets,
            # which segfaults when the group's coordinator is still loading (librdkafka
            # issue 5040; see amlhp.pipeline.access)
            result = self._reader(watch.group).committed(mine, timeout=self.timeout_s)
            committed[watch.name] = {
                (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in result
            }
        futures = self._admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in tps}, request_timeout=self.timeout_s
        )
        highs = {
            (tp.topic, tp.partition): int(f.result(self.timeout_s).offset)
            for tp, f in futures.items()
        }
        return highs, committed

    def sample_once(self) -> dict[str, Any]:
        """Read CPU and lag now; the sample is stored and returned."""
        from confluent_kafka import KafkaException

        now = time.time()
        row: dict[str, Any] = {"t": round(now, 3)}
        with self._lock:
            processes = dict(self.processes)
        for name, pid in processes.items():
            cpu = process_cpu_seconds(pid)
            if cpu is not None:
                row[f"cpu_{name}"] = cpu
        busy = machine_busy_seconds()
        if busy is not None:
            row["cpu_machine"] = busy
        try:
            highs, committed = self._read_offsets()
        except (KafkaException, TimeoutError, KeyError, ValueError, RuntimeError) as exc:
            self.errors += 1
            log.warning("lag not read: %s", exc)
            with self._lock:
                self.samples.append(row)
            return row
        for key, high in highs.items():
            self._history.setdefault(key, OffsetHistory()).add(now, high)
        total_records = 0
        worst_s = 0.0
        for watch in self.groups:
            records = 0
            seconds = 0.0
            for topic in watch.topics:
                topic_records = 0
                for p in self._partitions.get(topic, []):
                    high = highs.get((topic, p), 0)
                    done = committed[watch.name].get((topic, p)) or 0
                    behind = max(0, high - done)
                    topic_records += behind
                    if behind:
                        at = self._history[(topic, p)].appended_at(done)
                        if at is not None:
                            seconds = max(seconds, now - at)
                row[f"lag_records_{watch.name}_{_short(topic)}"] = topic_records
                records += topic_records
            row[f"lag_records_{watch.name}"] = records
            row[f"lag_seconds_{watch.name}"] = round(seconds, 3)
            total_records += records
            worst_s = max(worst_s, seconds)
        row["lag_records"] = total_records
        row["lag_seconds"] = round(worst_s, 3)
        with self._lock:
            self.samples.append(row)
        return row

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_once()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return dict(self.samples[-1]) if self.samples else None

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        """The samples taken from ``start`` to ``end`` (unix seconds)."""
        with self._lock:
            return [dict(s) for s in self.samples if start <= s["t"] <= end]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def _short(topic: str) -> str:
    """``amlhp-bench-x.packets.raw`` -> ``raw``: the last name part of a pipeline topic."""
    return topic.rsplit(".", 1)[-1]


def cpu_shares(samples: list[dict[str, Any]]) -> dict[str, float]:
    """Cores used on average by each sampled process over the samples' time span.

    A process seen in only part of the span (a tap that ends) counts its CPU time while it
    was seen, divided by the whole span. ``machine`` is every process on the machine (other
    jobs included); ``other`` is what the machine used beyond the sampled processes.
    1.0 is one full core.
    """
    if len(samples) < 2:
        return {}
    wall = samples[-1]["t"] - samples[0]["t"]
    if wall <= 0:
        return {}
    keys = sorted({k for s in samples for k in s if k.startswith("cpu_")})
    out: dict[str, float] = {}
    for key in keys:
        seen = [s[key] for s in samples if key in s]
        if len(seen) >= 2:
            out[key[4:]] = round((seen[-1] - seen[0]) / wall, 3)
    if "machine" in out:
        ours = sum(v for k, v in out.items() if k != "machine")
        out["other"] = round(max(0.0, out["machine"] - ours), 3)
    return out
