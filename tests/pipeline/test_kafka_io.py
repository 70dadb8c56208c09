"""Client helpers against the real broker: committed offsets of new and used groups."""

from __future__ import annotations

import pytest

from amlhp.pipeline.kafka_io import consumer_config, producer_config
from amlhp.settings import Settings
from amlhp.streams.topics import ensure_pipeline_topics
from tests.support.kafka import committed_offsets


@pytest.mark.kafka
def test_committed_offsets_of_a_new_group_then_after_a_commit(kafka_settings: Settings) -> None:
    from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

    ensure_pipeline_topics(kafka_settings)
    topic = kafka_settings.topic_raw
    parts = [TopicPartition(topic, p) for p in range(kafka_settings.partitions)]
    group = f"{kafka_settings.consumer_group}-probe"

    consumer = Consumer(consumer_config(kafka_settings, group_id=group, client_id="probe"))
    try:
        # A group the coordinator has never seen: no offsets, and no coordinator error.
        fresh = committed_offsets(consumer, parts)
        assert [tp.offset for tp in fresh] == [OFFSET_INVALID] * len(parts)

        producer = Producer(producer_config(kafka_settings, client_id="probe"))
        producer.produce(topic, value=b"x", partition=0)
        assert producer.flush(30) == 0
        consumer.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        after = {tp.partition: tp.offset for tp in committed_offsets(consumer, parts)}
        assert after[0] == 1
        assert all(after[p] == OFFSET_INVALID for p in range(1, kafka_settings.partitions))
    finally:
        consumer.close()


def test_librdkafka_repeats_are_held_back_and_counted() -> None:
    """One failed connect per window, whatever its timings; the next says how many were held."""
    import logging

    from amlhp.kafka_log import HoldRepeats

    hold = HoldRepeats(window_s=0.2)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("amlhp.librdkafka", logging.ERROR, __file__, 1, text, None, None)

    fail = "FAIL [rdkafka#producer-1] Connect to 127.0.0.1:1 failed (after {}ms)"
    assert hold.filter(record(fail.format(0)))
    assert not any(hold.filter(record(fail.format(n))) for n in range(1, 50))
    assert hold.filter(record("another message"))
    import time

    time.sleep(0.25)
    again = record(fail.format(7))
    assert hold.filter(again)
    assert "49 like it" in again.getMessage()
