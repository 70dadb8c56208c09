"""Support for tests against the real local broker: per-test names, produce and consume.

The pytest fixtures in ``tests/conftest.py`` hand out these types; they live here, in
``tests.support``, so that test modules can import them for annotations and so that every
stage's integration tests produce and drain topics the same strict way: every delivery
confirmed, every message counted. Not part of the installed package.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amlhp.infra.exceptions import InfraError
from amlhp.infra.kafka_config import KafkaLayout

if TYPE_CHECKING:
    from confluent_kafka import Message


@dataclass(frozen=True)
class KafkaHandle:
    """A running local deployment and who owns it.

    ``for_tests``: a ``pytest-*`` layout that the test sessions start and remove;
    otherwise a developer's (``make kafka-up``) or an external broker, left running.
    """

    layout: KafkaLayout
    for_tests: bool
    external: bool  # answers on our ports but is not a process amlhp started

    @property
    def bootstrap_servers(self) -> str:
        return self.layout.bootstrap_servers


@dataclass(frozen=True)
class KafkaNames:
    """Per-test names, so that tests sharing one broker never see each other's messages."""

    prefix: str
    topic: str
    group: str


class SessionUsers:
    """Test sessions sharing one ``pytest-*`` layout (several may run in one checkout):
    each registers its pid, and the last one to leave stops the layout."""

    def __init__(self, folder: Path, pid: int) -> None:
        self.folder = folder
        self.pid = pid

    def join(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / str(self.pid)).touch()

    def leave(self) -> bool:
        """Unregister; True when no other live session still uses the layout."""
        (self.folder / str(self.pid)).unlink(missing_ok=True)
        others = [
            entry
            for entry in self.folder.iterdir()
            if entry.name.isdigit() and Path(f"/proc/{entry.name}").exists()
        ]
        return not others


def produce_all(
    config: Mapping[str, Any],
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]],
    *,
    timeout: float = 60.0,
) -> int:
    """Produce ``(key, value)`` records and wait for every delivery report; return the count.

    Any failed delivery raises :class:`InfraError` with the first error.
    """
    from confluent_kafka import KafkaError, Producer

    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"linger.ms": 5, "enable.idempotence": True, **config})
    count = 0
    for key, value in records:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
        count += 1
    left = producer.flush(timeout)
    if left:
        raise InfraError(f"{left} of {count} messages to {topic} not delivered in {timeout}s")
    if errors:
        raise InfraError(f"{len(errors)} deliveries to {topic} failed, first: {errors[0]}")
    return count


def consume_exactly(
    config: Mapping[str, Any],
    topic: str,
    group: str,
    count: int,
    *,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> list[Message]:
    """Consume ``count`` messages of ``topic`` in ``group`` (from the earliest uncommitted),
    commit, then keep polling ``settle`` seconds to prove no extra message follows.

    Raises :class:`InfraError` on a message error, a shortfall after ``timeout`` or a surplus.
    """
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **config,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                if msg.error() is not None:
                    raise InfraError(f"consuming {topic}: {msg.error()}")
                out.append(msg)
        if len(out) < count:
            raise InfraError(f"got {len(out)} of {count} messages from {topic} in {timeout}s")
        end = time.monotonic() + settle
        while time.monotonic() < end:
            extra = consumer.consume(num_messages=100, timeout=0.2)
            if extra:
                raise InfraError(f"{topic} holds more than the {count} messages expected")
        if out:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return out


def committed_offsets(
    consumer: Any, partitions: list[Any], timeout_s: float = 60.0, attempt_s: float = 10.0
) -> list[Any]:
    """The group's committed offsets, retried while the group coordinator moves.

    Right after a group is created, or while a broker takes over its coordinator
    partition, the broker answers ``NOT_COORDINATOR`` or
    ``COORDINATOR_LOAD_IN_PROGRESS``: retriable, and not a reason to crash a rebalance
    callback. Any other error, or still failing after ``timeout_s``, is raised.
    """
    import time

    from confluent_kafka import KafkaException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return list(consumer.committed(partitions, timeout=attempt_s))
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = bool(getattr(err, "retriable", lambda: False)()) or _is_coordinator_error(
                err
            )
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.5)


def _is_coordinator_error(err: Any) -> bool:
    from confluent_kafka import KafkaError

    code = err.code() if hasattr(err, "code") else None
    return code in {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    }
