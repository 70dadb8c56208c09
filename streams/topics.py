"""Create and inspect the pipeline's Kafka topics with confluent-kafka's AdminClient.

Creation is idempotent: a topic that already exists is reported as such, never an error,
so ``amlhp topics create`` and ``amlhp demo`` can run any number of times. Partitions,
replication factor and retention come from the settings (``AMLHP_PARTITIONS``,
``AMLHP_REPLICATION_FACTOR``, ``AMLHP_RETENTION_MS``) unless given explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amlhp.streams.exceptions import StreamsError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from amlhp.settings import Settings

ADMIN_TIMEOUT_S = 30.0
#: the first answer of a cluster (its metadata): an unreachable broker is reported after this
METADATA_TIMEOUT_S = 10.0
#: librdkafka error codes that mean no broker answered
_UNREACHABLE = ("_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN", "_RESOLVE")


class TopicError(StreamsError):
    """A topic could not be created, listed or deleted (cluster unreachable, bad spec)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    replication_factor: int


@dataclass(frozen=True)
class CreateResult:
    name: str
    created: bool  # False: it existed already (left as it is)
    partitions: int


def pipeline_topic_specs(
    settings: Settings,
    *,
    partitions: int | None = None,
    replication_factor: int | None = None,
    retention_ms: int | None = None,
) -> list[TopicSpec]:
    """The pipeline topics (raw, verdicts, dead letter, flow verdicts, device inventory,
    explanations, alerts, the alert stage's ticks and analysts' feedback). The device
    inventory and the feedback are compacted (the latest entry per host, or per incident,
    is what counts, kept however old); the rest expire."""
    retention = settings.retention_ms if retention_ms is None else retention_ms
    compacted = {settings.topic_devices, settings.topic_feedback}
    return [
        TopicSpec(
            name=name,
            partitions=partitions or settings.partitions,
            replication_factor=replication_factor or settings.replication_factor,
            config={"cleanup.policy": "compact"}
            if name in compacted
            else {"retention.ms": str(retention)},
        )
        for name in settings.topics.all()
    ]


def admin_client(kafka_config: Mapping[str, Any]) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    from amlhp.kafka_log import with_logger

    return AdminClient(with_logger(kafka_config))


def create_topics(
    admin: AdminClient, specs: Iterable[TopicSpec], *, timeout: float = ADMIN_TIMEOUT_S
) -> list[CreateResult]:
    """Create the topics that do not exist; existing ones are reported, not changed."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    specs = list(specs)
    if not specs:
        return []
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions,
            replication_factor=s.replication_factor,
            config=dict(s.config),
        )
        for s in specs
    ]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    existing: list[str] = []
    results: dict[str, CreateResult] = {}
    for spec in specs:
        try:
            futures[spec.name].result(timeout=timeout + 5)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.append(spec.name)
                continue
            raise TopicError(f"cannot create topic {spec.name!r}: {err}") from exc
        results[spec.name] = CreateResult(spec.name, True, spec.partitions)
    if existing:
        current = {t.name: t for t in list_topics(admin, timeout=timeout)}
        for name in existing:
            parts = current[name].partitions if name in current else 0
            results[name] = CreateResult(name, False, parts)
    return [results[s.name] for s in specs]


def list_topics(
    admin: AdminClient, *, include_internal: bool = False, timeout: float = ADMIN_TIMEOUT_S
) -> list[TopicInfo]:
    """Topics of the cluster, sorted by name; internal ones (``__*``) only on request."""
    from confluent_kafka import KafkaException

    try:
        metadata = admin.list_topics(timeout=min(timeout, METADATA_TIMEOUT_S))
    except KafkaException as exc:
        error = exc.args[0]
        if error.name() in _UNREACHABLE:
            raise TopicError(
                f"no Kafka broker answered within {min(timeout, METADATA_TIMEOUT_S):.0f} s "
                f"({error.str()}): is it running (`amlhp infra kafka up`) and is "
                "-b / AMLHP_BOOTSTRAP_SERVERS right?"
            ) from exc
        raise TopicError(f"cannot list topics: {error.str()}") from exc
    out = []
    for name, topic in metadata.topics.items():
        if name.startswith("__") and not include_internal:
            continue
        partitions = topic.partitions
        rf = len(next(iter(partitions.values())).replicas) if partitions else 0
        out.append(TopicInfo(name, len(partitions), rf))
    return sorted(out, key=lambda t: t.name)


def delete_topics(
    admin: AdminClient, names: Iterable[str], *, timeout: float = ADMIN_TIMEOUT_S
) -> None:
    """Delete topics and wait until the metadata no longer lists them (deletion is
    asynchronous: a topic re-created too early fails as "marked for deletion").
    A topic that does not exist is not an error."""
    from confluent_kafka import KafkaError, KafkaException

    names = list(names)
    if not names:
        return
    futures = admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout + 5)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            raise TopicError(f"cannot delete topic {name!r}: {err}") from exc
    deadline = time.monotonic() + timeout
    while True:
        left = set(names) & {t.name for t in list_topics(admin, timeout=timeout)}
        if not left:
            return
        if time.monotonic() > deadline:
            raise TopicError(f"topics still listed {timeout:.0f}s after deletion: {sorted(left)}")
        time.sleep(0.2)


def ensure_pipeline_topics(settings: Settings, **overrides: int | None) -> list[CreateResult]:
    """Create the pipeline topics on the cluster the settings point at (idempotent);
    ``overrides``: the keywords of :func:`pipeline_topic_specs`."""
    specs = pipeline_topic_specs(settings, **overrides)
    return create_topics(admin_client(settings.kafka_config()), specs)
