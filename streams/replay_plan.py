"""What a replay reads: a capture-time window turned into fixed offsets per partition.

Semantics (also in ``docs/replay.md``):

* ``--from``/``--to`` are capture times (the ``ts_ns`` the tap stamps on each packet from
  the gateway's clock), half-open: a packet is in the window when ``from <= ts_ns < to``.
  The filter is applied per packet, so the window is exact per packet.
* The tap sets Kafka's timestamp of a raw message to the capture time of its newest
  packet (never later than the tap's clock at publication). So the first offset whose
  timestamp is at or after ``from`` (Kafka's offsets-for-times) is an exact start: every
  earlier message holds only packets captured before ``from``.
* The end offset is the first one whose timestamp is at or after ``to + grace`` (the high
  watermark when there is none). A later message could still hold a packet captured
  before ``to`` only if its packets span more than ``grace`` of capture time, or if taps
  sharing a partition have clocks more than ``grace`` apart: ``grace`` (default 300 s)
  bounds that, and a larger one only reads more. The verdict topic (``--source
  verdicts``) is stamped when the worker publishes, after capture: there ``grace`` must
  also cover the pipeline's lag.
* Both offsets are fixed when the run starts and stored in the run manifest, so a resumed
  run reads exactly the same messages; packets published later are not part of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from amlhp.pipeline.kafka_io import PACKETS_HEADER
from amlhp.settings import Settings
from amlhp.streams.exceptions import ReplayError

#: How long a packet may take from capture to publication and still be found (seconds).
DEFAULT_GRACE_S = 300.0
_NS = 1_000_000_000


def parse_time(text: str) -> int:
    """An ISO 8601 time (``2026-11-20T00:00Z``; no zone means UTC) -> ns since the epoch."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReplayError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-20T00:00Z)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * _NS + moment.microsecond * 1000


def iso_ns(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / _NS, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Window:
    """Capture times ``[from_ns, to_ns)`` and, when not empty, the gateways to keep."""

    from_ns: int
    to_ns: int
    gateways: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.to_ns <= self.from_ns:
            raise ReplayError(
                f"--to ({iso_ns(self.to_ns)}) must be after --from ({iso_ns(self.from_ns)})"
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "from": iso_ns(self.from_ns),
            "to": iso_ns(self.to_ns),
            "from_ns": self.from_ns,
            "to_ns": self.to_ns,
            "gateways": sorted(self.gateways),
        }


@dataclass(frozen=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition."""

    partition: int
    start: int
    end: int

    @property
    def messages(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True)
class ReplayPlan:
    """Everything a run reads, fixed at its start."""

    topic: str
    source: str  # "raw" (re-score) or "verdicts" (re-export)
    window: Window
    grace_s: float
    partitions: tuple[PartitionRange, ...]
    estimated_packets: int
    planned_at_ns: int

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "source": self.source,
            "window": self.window.as_dict(),
            "grace_s": self.grace_s,
            "partitions": [asdict(p) for p in self.partitions],
            "messages": self.messages,
            "estimated_packets": self.estimated_packets,
            "planned_at": iso_ns(self.planned_at_ns),
            "planned_at_ns": self.planned_at_ns,
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> ReplayPlan:
        window = body["window"]
        return cls(
            topic=body["topic"],
            source=body["source"],
            window=Window(window["from_ns"], window["to_ns"], tuple(window["gateways"])),
            grace_s=float(body["grace_s"]),
            partitions=tuple(PartitionRange(**p) for p in body["partitions"]),
            estimated_packets=int(body["estimated_packets"]),
            planned_at_ns=int(body["planned_at_ns"]),
        )


def plan_replay(
    settings: Settings,
    topic: str,
    source: str,
    window: Window,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    timeout_s: float = 30.0,
) -> ReplayPlan:
    """Look the window up on the broker: start and end offsets of every partition.

    Raises :class:`ReplayError` naming the topic when it does not exist, and naming the
    earliest time still available when retention already deleted part of the window.
    """
    import time

    from confluent_kafka import Consumer, TopicPartition

    from amlhp.pipeline.kafka_io import consumer_config

    group = f"{settings.consumer_group}-replay-plan"
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="amlhp-replay-plan"))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise ReplayError(f"topic {topic!r} does not exist on {settings.bootstrap_servers}")
        ids = sorted(meta.partitions)
        from_ms = window.from_ns // 1_000_000
        end_ms = math.ceil(window.to_ns / 1_000_000) + int(grace_s * 1000)
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, from_ms) for p in ids], timeout=timeout_s
        )
        ends = consumer.offsets_for_times(
            [TopicPartition(topic, p, end_ms) for p in ids], timeout=timeout_s
        )
        ranges = []
        for p, start_tp, end_tp in zip(ids, starts, ends, strict=True):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False
            )
            start = high if start_tp.offset < 0 else max(start_tp.offset, low)
            end = high if end_tp.offset < 0 else max(end_tp.offset, start)
            if low > 0 and start == low and start < high:
                _check_retention(consumer, topic, p, low, from_ms, timeout_s)
            ranges.append(PartitionRange(p, start, min(end, high)))
        estimated = sum(
            r.messages * _packets_per_message(consumer, topic, r, timeout_s)
            for r in ranges
            if r.messages
        )
    finally:
        consumer.close()
    return ReplayPlan(topic, source, window, grace_s, tuple(ranges), estimated, time.time_ns())


def _first_message(consumer: Any, topic: str, partition: int, offset: int, timeout_s: float) -> Any:
    import time

    from confluent_kafka import TopicPartition

    consumer.assign([TopicPartition(topic, partition, offset)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg
        raise ReplayError(f"{topic} partition {partition}: no message at offset {offset}")
    finally:
        consumer.unassign()


def _check_retention(
    consumer: Any, topic: str, partition: int, low: int, from_ms: int, timeout_s: float
) -> None:
    """The window starts before the oldest message left: retention deleted some of it."""
    msg = _first_message(consumer, topic, partition, low, timeout_s)
    _, oldest_ms = msg.timestamp()
    if oldest_ms > from_ms:
        oldest = iso_ns(oldest_ms * 1_000_000)
        raise ReplayError(
            f"the window starts at {iso_ns(from_ms * 1_000_000)}, but {topic} partition "
            f"{partition} no longer holds what was published before {oldest} (retention "
            f"deleted offsets 0-{low - 1}); the earliest time still available is {oldest}: "
            "replay --from that time or later"
        )


def _packets_per_message(consumer: Any, topic: str, rng: PartitionRange, timeout_s: float) -> int:
    """The packet count the tap put in the header of the range's first message."""
    msg = _first_message(consumer, topic, rng.partition, rng.start, timeout_s)
    for key, value in msg.headers() or []:
        if key == PACKETS_HEADER and value:
            try:
                return max(1, int(value))
            except ValueError:
                break
    try:  # no header (the verdict topic): the batch's row count
        return max(1, pa.ipc.open_stream(msg.value() or b"").read_all().num_rows)
    except (pa.ArrowInvalid, OSError):
        return 1
