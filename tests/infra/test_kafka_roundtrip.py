"""10,000 messages through the real local broker: produced, consumed in a group, all equal."""

from __future__ import annotations

import pytest

from amlhp.infra.exceptions import InfraError
from amlhp.streams.topics import TopicSpec, admin_client, create_topics
from tests.support.kafka import KafkaNames, consume_exactly, produce_all

N_MESSAGES = 10_000
PARTITIONS = 3


@pytest.mark.kafka
def test_ten_thousand_messages_round_trip(kafka_bootstrap: str, kafka_names: KafkaNames) -> None:
    from confluent_kafka import Consumer, TopicPartition

    config = {"bootstrap.servers": kafka_bootstrap}
    [created] = create_topics(admin_client(config), [TopicSpec(kafka_names.topic, PARTITIONS, 1)])
    assert created.created

    sent = {f"key-{i}".encode(): f"value-{i}-{'x' * (i % 50)}".encode() for i in range(N_MESSAGES)}
    assert produce_all(config, kafka_names.topic, sent.items()) == N_MESSAGES

    messages = consume_exactly(config, kafka_names.topic, kafka_names.group, N_MESSAGES)
    received = {m.key(): m.value() for m in messages}
    assert len(messages) == N_MESSAGES  # no duplicates: every key is distinct
    assert received == sent

    last_offset: dict[int, int] = {}
    for m in messages:  # order holds within each partition
        partition, offset = m.partition(), m.offset()
        assert partition is not None
        assert offset is not None
        assert offset > last_offset.get(partition, -1)
        last_offset[partition] = offset
    assert sorted(last_offset) == list(range(PARTITIONS))  # keys spread over all partitions

    # The group committed where it stopped: a new member of it gets nothing more.
    probe = Consumer({**config, "group.id": kafka_names.group})
    try:
        parts = [TopicPartition(kafka_names.topic, p) for p in range(PARTITIONS)]
        committed = probe.committed(parts, timeout=10)
    finally:
        probe.close()
    assert sum(tp.offset for tp in committed) == N_MESSAGES
    with pytest.raises(InfraError, match="got 0 of 1"):
        consume_exactly(config, kafka_names.topic, kafka_names.group, 1, timeout=3)
