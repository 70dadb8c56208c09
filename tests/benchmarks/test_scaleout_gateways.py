"""The scale-out run's gateways cover every partition, as the tap's producer places them.

Kafka's parallelism is per partition and the tap keys messages by gateway, so the
scale-out benchmark is only meaningful if its gateways' keys land on distinct partitions
(one per partition): checked by the arithmetic, then by the real producer on the broker.
"""

from __future__ import annotations

import zlib

import pytest

from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.scaleout import key_partition, scaleout_gateways
from amlhp.pipeline.kafka_io import producer_config
from amlhp.settings import Settings


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 8])
def test_gateways_cover_every_partition_once(partitions: int) -> None:
    gateways = scaleout_gateways(partitions)
    assert len(gateways) == partitions
    assert sorted(gateways.values()) == list(range(partitions))
    for name, partition in gateways.items():
        assert zlib.crc32(name.encode()) % partitions == partition
    assert scaleout_gateways(partitions) == gateways  # deterministic between runs


def test_four_partitions_get_four_distinct_gateways() -> None:
    gateways = scaleout_gateways(4)
    assert {key_partition(name, 4) for name in gateways} == {0, 1, 2, 3}


def test_impossible_cover_is_an_error() -> None:
    with pytest.raises(BenchmarksError):
        scaleout_gateways(4, max_tries=2)
    with pytest.raises(BenchmarksError):
        key_partition("gw", 0)


def test_the_tap_producer_puts_each_gateway_on_its_predicted_partition(
    kafka_settings: Settings,
) -> None:
    """The tap's own producer config (no partitioner set) agrees with :func:`key_partition`."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    partitions = 4
    topic = kafka_settings.topic_raw
    admin = AdminClient(kafka_settings.kafka_config())
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result()
    try:
        gateways = scaleout_gateways(partitions)
        placed: dict[str, int] = {}

        def delivered(err: object, msg: object) -> None:
            assert err is None, err
            placed[msg.key().decode()] = msg.partition()  # type: ignore[attr-defined]

        producer = Producer(producer_config(kafka_settings, client_id="test-scaleout"))
        for name in gateways:
            producer.produce(topic, b"x", key=name.encode(), on_delivery=delivered)
        assert producer.flush(30) == 0
        assert placed == gateways
    finally:
        admin.delete_topics([topic])[topic].result()
