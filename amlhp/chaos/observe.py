"""What a fault scenario measures besides the ledger: peak lag and verdict-topic duplicates.

The dataset is exact by construction (the sinks drop re-delivered rows), so the price of
a fault shows elsewhere: in the lag the pipeline builds up while a stage is away, and in
the verdicts the worker publishes twice after a crash (the topic is at-least-once, with
(gateway, seq) as the idempotency key). Both are figures of the suite's table.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from amlhp.metrics.lag import ConsumerLagCollector
from amlhp.settings import Settings
from amlhp.wire import VERDICT, from_ipc

log = logging.getLogger(__name__)


class PeakLag:
    """Samples the worker group's lag (raw records) every ``interval_s`` in a
    thread; :attr:`peak` is the largest total seen."""

    def __init__(self, settings: Settings, interval_s: float = 1.0) -> None:
        topics = [settings.topic_raw]
        self._collector = ConsumerLagCollector(settings, settings.consumer_group, topics)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="amlhp-chaos-lag", daemon=True)
        self.peak = 0

    def start(self) -> PeakLag:
        self._thread.start()
        return self

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        while not self._stop.is_set():
            try:
                lags = self._collector.poll_once()
            except (KafkaException, TimeoutError, KeyError, ValueError, RuntimeError) as exc:
                log.info("lag not sampled: %s", exc)  # a broker away: the next sample counts
            else:
                self.peak = max(self.peak, sum(lag.records for lag in lags))
            self._stop.wait(self._interval_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        self._collector.close()
        return self.peak


def _verdict_keys(settings: Settings, timeout_s: float = 30.0) -> Iterator[tuple[str, int]]:
    """(gateway, seq) of every verdict row on the topic, from the start to the end."""
    from confluent_kafka import Consumer, TopicPartition

    config = settings.kafka_config(
        **{"group.id": f"{settings.consumer_group}.chaos-audit", "enable.auto.commit": False}
    )
    consumer = Consumer(config)
    try:
        meta = consumer.list_topics(settings.topic_verdicts, timeout=timeout_s)
        parts = sorted(meta.topics[settings.topic_verdicts].partitions)
        ends = {}
        for p in parts:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic_verdicts, p), timeout=timeout_s
            )
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(settings.topic_verdicts, p, 0) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            # consume() waits for all of num_messages or the timeout: short calls, so that
            # the tail of the topic (fewer than 500 messages) does not cost a whole timeout
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            if msgs:
                deadline = time.monotonic() + timeout_s
            elif time.monotonic() > deadline:
                raise TimeoutError(f"the verdict topic stopped short of {ends}")
            for msg in msgs:
                if msg.error() is not None:
                    continue
                part, offset = msg.partition() or 0, msg.offset() or 0
                if part in ends and offset + 1 >= ends[part]:
                    del ends[part]
                batch = from_ipc(msg.value() or b"", VERDICT)
                gateways = batch.column("gateway").to_pylist()
                yield from zip(gateways, batch.column("seq").to_pylist(), strict=True)
    finally:
        consumer.close()


def topic_duplicates(settings: Settings) -> int:
    """Verdict rows on the topic whose (gateway, seq) came before (re-published)."""
    seen: set[tuple[str, int]] = set()
    twice = 0
    for key in _verdict_keys(settings):
        if key in seen:
            twice += 1
        seen.add(key)
    return twice
