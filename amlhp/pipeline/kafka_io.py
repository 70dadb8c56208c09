"""librdkafka client configurations for the pipeline's producers and consumers.

One place decides the delivery guarantees: producers are idempotent with acks from all
in-sync replicas and compression; consumers commit manually, only after the work that
depends on a message is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa

from amlhp.kafka_log import with_logger
from amlhp.settings import Settings
from amlhp.wire import BatchDecodeError

#: librdkafka's reconnect backoff grows to ``reconnect.backoff.max.ms`` (10 s by default)
#: while a broker is down, so a client could wait up to 10 s more after the broker is
#: back: seen as the sink resuming 11 s after a restarted broker answered. A second at
#: most is still far from hammering a broker that is down.
RECONNECT = {"reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000}


def producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    """An idempotent, compressed producer: no loss and no duplicates on retries."""
    config: dict[str, Any] = {
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "message.max.bytes": 8_000_000,
        "message.timeout.ms": 120_000,
        "retries": 2_147_483_647,
        **RECONNECT,
    }
    config.update(extra)
    return with_logger(settings.kafka_config(**config))


#: Kafka header of a raw message: when the tap handed it to its producer (wall clock, ns).
#: The message's own timestamp is capture time (:func:`capture_timestamp_ms`), which for a
#: replayed capture is days old, so ingestion latency is measured from this header.
PUBLISHED_HEADER = "amlhp-published-at-ns"
#: Kafka header of a raw message: how many packets its batch holds (the worker cuts its
#: micro-batches by packets, and a replay plans by them, without decoding the batch).
PACKETS_HEADER = "amlhp-packets"


def capture_timestamp_ms(newest_capture_ns: int) -> int:
    """Kafka timestamp of a message of packets (raw or verdicts): the capture time of its
    newest packet, never later than now. Every packet of the message was captured at or
    before it, which is what lets ``amlhp replay`` find a capture-time window with
    offsets-for-times (see :mod:`amlhp.streams.replay_plan`)."""
    import time

    return min(newest_capture_ns, time.time_ns()) // 1_000_000


def consumer_config(
    settings: Settings, group_id: str, client_id: str, **extra: Any
) -> dict[str, Any]:
    """A consumer that never auto-commits: offsets move only after durable processing."""
    config: dict[str, Any] = {
        "client.id": client_id,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.message.max.bytes": 8_000_000,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 3),
        **RECONNECT,
    }
    config.update(extra)
    return with_logger(settings.kafka_config(**config))


def read_topic_batches(
    settings: Settings,
    topic: str,
    decode: Callable[[bytes], pa.RecordBatch],
    timeout_s: float = 30.0,
) -> tuple[list[pa.RecordBatch], int]:
    """All batches of a topic up to its current high watermarks; (batches, undecodable)."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        with_logger(
            settings.kafka_config(
                **{
                    "group.id": "amlhp-accounting-reader",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.message.max.bytes": 8_000_000,
                }
            )
        )
    )
    batches: list[pa.RecordBatch] = []
    bad = 0
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        parts = meta.topics[topic].partitions if topic in meta.topics else {}
        ends: dict[int, int] = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return [], 0
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        remaining = dict(ends)
        while remaining and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None:
                    continue
                p, offset = msg.partition() or 0, msg.offset() or 0
                if offset + 1 >= remaining.get(p, 0):
                    remaining.pop(p, None)
                try:
                    batches.append(decode(msg.value() or b""))
                except BatchDecodeError:
                    bad += 1
    finally:
        consumer.close()
    return batches, bad
