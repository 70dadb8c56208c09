"""The 3-broker cluster keeps every acknowledged message when one broker stops."""

from __future__ import annotations

import time

import pytest

from amlhp.infra import kafka_broker
from amlhp.streams.topics import TopicSpec, admin_client, create_topics
from tests.support.kafka import KafkaHandle, KafkaNames, consume_exactly, produce_all

PARTITIONS = 3
BATCH = 2_000


def _leader_of_partition_0(bootstrap: str, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return int(meta.topics[topic].partitions[0].leader)


def _isr_sizes(bootstrap: str, topic: str, expected: list[int], timeout: float = 30.0) -> list[int]:
    """ISR size per partition, once metadata shows them all (creation propagates lazily)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        meta = admin.list_topics(topic, timeout=10)
        parts = meta.topics[topic].partitions if topic in meta.topics else {}
        sizes = [len(p.isrs) for _, p in sorted(parts.items())]
        if sizes == expected or time.monotonic() > deadline:
            return sizes
        time.sleep(0.5)


def _batch(start: int) -> list[tuple[bytes | None, bytes]]:
    return [(f"k{i}".encode(), f"v{i}".encode()) for i in range(start, start + BATCH)]


@pytest.mark.cluster
@pytest.mark.slow
def test_rf3_topic_survives_a_broker_stop(
    kafka_cluster: KafkaHandle, kafka_names: KafkaNames
) -> None:
    layout = kafka_cluster.layout
    bootstrap = kafka_cluster.bootstrap_servers
    config = {"bootstrap.servers": bootstrap}
    producer_config = {**config, "acks": "all"}
    topic, group = kafka_names.topic, kafka_names.group
    create_topics(admin_client(config), [TopicSpec(topic, PARTITIONS, 3)])
    assert _isr_sizes(bootstrap, topic, [3] * PARTITIONS) == [3] * PARTITIONS

    produce_all(producer_config, topic, _batch(0))
    first = consume_exactly(config, topic, group, BATCH)  # commits its offsets

    victim = _leader_of_partition_0(bootstrap, topic)
    try:
        assert kafka_broker.stop_nodes(layout, [victim]).stopped == [victim]
        # With min.insync.replicas=2, acks=all writes still succeed on the two left.
        produce_all(producer_config, topic, _batch(BATCH))
        second = consume_exactly(config, topic, group, BATCH)  # same group: resumes after first
        assert _leader_of_partition_0(bootstrap, topic) != victim
    finally:
        kafka_broker.restart_node(layout, victim)

    got = [(m.key(), m.value()) for m in first + second]
    assert sorted(got) == sorted(_batch(0) + _batch(BATCH))
    # The restarted broker catches up and rejoins the ISR.
    assert _isr_sizes(bootstrap, topic, [3] * PARTITIONS, timeout=60) == [3] * PARTITIONS
