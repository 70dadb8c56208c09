"""``amlhp alerts export``: the alert topic, live, into a SIEM's format and receiver.

A consumer group of its own (``<consumer_group>-export`` unless named) reads the alert
topic; each alert row (an incident's revision: opened, updated, closed) becomes one
record in the chosen format (:mod:`amlhp.alerts.export`) and goes to the output
(:mod:`amlhp.alerts.delivery`). Offsets are committed only after every record of the
messages they cover was delivered or dead-lettered, so a stop or a crash re-sends, never
skips (at least once; ``Idempotency-Key`` on webhooks and the incident id and revision in
every format let a receiver drop a repeat). A record its receiver refused, or that still
failed after the retries, goes to the dead-letter topic (``amlhp.deadletter``, reason
``export_failed``, stage ``export``, its origin offset and the record itself): never lost
silently. Rows an allow-list rule covers (``suppressed_by``) are not exported unless
asked (``--include-suppressed``): they stay in the alert topic and dataset. A covered
incident's ``closed`` row is exported all the same: a rule added while the incident was
open (or a false positive's) must not leave it open forever in a SIEM that saw it open. Several
exports (one per SIEM) run side by side under different groups.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from amlhp.alerts.delivery import DeliveryStats, Output, Record, RetryPolicy, deliver
from amlhp.alerts.export import formatter
from amlhp.metrics.definitions import process_metrics
from amlhp.pipeline.incidents import incident_json
from amlhp.pipeline.kafka_io import consumer_config
from amlhp.settings import Settings
from amlhp.streams.deadletter import Origin, dead_message
from amlhp.wire import ALERT, BatchDecodeError, from_ipc, to_ipc

log = logging.getLogger(__name__)
EXPORT_FAILED = "export_failed"
STAGE = "export"
STATUSES = ("opened", "updated", "closed")


@dataclass
class ExportStats:
    messages: int = 0
    rows: int = 0
    skipped: int = 0  # filtered out: by status, or suppressed
    bad_messages: int = 0
    delivery: DeliveryStats = field(default_factory=DeliveryStats)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delivery": asdict(self.delivery)}


@dataclass(frozen=True)
class ExportOptions:
    fmt: str = "ecs"
    group: str | None = None
    statuses: tuple[str, ...] = STATUSES
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    #: stop once every partition was read to the end it had at the start (a batch run)
    until_end: bool = False
    #: export incidents an allow-list rule covers too (marked ``suppressed_by``)
    include_suppressed: bool = False


def exported(row: dict[str, Any], options: ExportOptions) -> bool:
    """Whether an alert row goes out: its status is asked for, and it is not suppressed
    (unless asked), a suppressed incident's close excepted (module docstring)."""
    if row["status"] not in options.statuses:
        return False
    return options.include_suppressed or not row.get("suppressed_by") or row["status"] == "closed"


def records_of(rows: Iterable[dict[str, Any]], fmt: str) -> list[Record]:
    """Alert rows -> formatted records (key ``<incident id>:<revision>``)."""
    line = formatter(fmt)
    out = []
    for row in rows:
        incident = incident_json(row)
        incident["revision"] = row["revision"]
        out.append(
            Record(
                key=f"{row['incident_id']}:{row['revision']}",
                line=line(incident),
                severity=str(row.get("severity") or "medium"),
                time_ns=int(row["last_seen_ns"]),
            )
        )
    return out


class AlertExport:
    """The export loop (see the module docstring); :meth:`run` until ``stop`` is set."""

    def __init__(self, settings: Settings, output: Output, options: ExportOptions) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings
        self.output = output
        self.options = options
        formatter(options.fmt)  # an unknown format fails here, not at the first incident
        self.group = options.group or f"{settings.consumer_group}-export"
        # a receiver that is down can hold one poll's records for minutes (retries)
        extra = {"enable.partition.eof": options.until_end, "max.poll.interval.ms": 1_800_000}
        self.consumer = Consumer(consumer_config(settings, self.group, "amlhp-export", **extra))
        self.producer = Producer(
            settings.kafka_config(**{"client.id": "amlhp-export-dead", "enable.idempotence": True})
        )
        self.stats = ExportStats()
        self.metrics = process_metrics()
        for result in ("delivered", "retried", "dead_lettered", "skipped"):
            self.metrics.exported.labels(result)
        self._assigned: set[int] = set()
        self._at_end: set[int] = set()

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned |= {p.partition for p in partitions}

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned -= {p.partition for p in partitions}

    def run(
        self, stop: threading.Event | None = None, on_step: Callable[[], None] | None = None
    ) -> ExportStats:
        stop = stop if stop is not None else threading.Event()
        topic = self.settings.topic_alerts
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not stop.is_set():
                messages = self.consumer.consume(num_messages=200, timeout=0.5)
                if messages:
                    self._handle(messages)
                if on_step is not None:
                    on_step()
                if self.options.until_end and self._assigned and self._assigned <= self._at_end:
                    break
        finally:
            self.producer.flush(30)
            self.consumer.close()
            self.output.close()
        return self.stats

    def _count(self, before: DeliveryStats, skipped: int) -> None:
        now = self.stats.delivery
        self.metrics.exported.labels("delivered").inc(now.delivered - before.delivered)
        self.metrics.exported.labels("retried").inc(now.retries - before.retries)
        self.metrics.exported.labels("dead_lettered").inc(now.dead - before.dead)
        self.metrics.exported.labels("skipped").inc(skipped)

    def _handle(self, messages: list[Any]) -> None:
        from confluent_kafka import KafkaError

        dead = []
        done = []
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(msg.partition())
                else:
                    log.warning("alert topic: %s", error)
                continue
            self._at_end.discard(msg.partition())
            origin = Origin(msg.topic(), msg.partition(), msg.offset())
            done.append(msg)
            self.stats.messages += 1
            try:
                batch = from_ipc(msg.value() or b"", ALERT)
            except BatchDecodeError as exc:
                self.stats.bad_messages += 1
                log.warning("alert message %s:%d is not a batch: %s", origin.topic,
                            origin.offset, exc)  # fmt: skip
                dead.append(dead_message(origin, STAGE, str(exc), msg.value(), None))
                continue
            rows = batch.to_pylist()
            wanted = [r for r in rows if exported(r, self.options)]
            self.stats.rows += len(rows)
            self.stats.skipped += len(rows) - len(wanted)
            records = records_of(wanted, self.options.fmt)
            gateways = {r.key: row["gateway"] for r, row in zip(records, wanted, strict=True)}
            before = DeliveryStats(**asdict(self.stats.delivery))
            failed = deliver(self.output, records, self.options.policy, self.stats.delivery)
            self._count(before, len(rows) - len(wanted))
            for record, reason in failed:
                log.error("incident %s dead-lettered: %s", record.key, reason)
                dead.append(
                    dead_message(
                        origin,
                        STAGE,
                        f"{record.key}: {reason}",
                        record.line.encode(),
                        gateways[record.key],
                        reason=EXPORT_FAILED,
                    )
                )
        for batch in dead:
            self.producer.produce(self.settings.topic_dead_letter, value=to_ipc(batch))
        if dead and self.producer.flush(30):
            raise RuntimeError("dead letters not delivered within 30 s: offsets not committed")
        if done:
            from confluent_kafka import KafkaException

            try:
                for msg in done:
                    self.consumer.store_offsets(message=msg)
                self.consumer.commit(asynchronous=False)
            except KafkaException as exc:  # a rebalance: the records come again (at least once)
                log.warning("offsets not committed, the records will be exported again: %s", exc)


__all__ = ["EXPORT_FAILED", "AlertExport", "ExportOptions", "ExportStats", "exported", "records_of"]
