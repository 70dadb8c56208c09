"""librdkafka client configurations for the pipeline's producers and consumers.

One place decides the delivery guarantees: producers are idempotent with acks from all
in-sync replicas and compression; consumers commit manually, only after the work that
depends on a message is durable.
"""

from __future__ import annotations

from typing import Any

from amlhp.settings import Settings


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
    }
    config.update(extra)
    return settings.kafka_config(**config)


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
        "session.timeout.ms": 30_000,
    }
    config.update(extra)
    return settings.kafka_config(**config)
