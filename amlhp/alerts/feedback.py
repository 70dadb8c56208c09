"""Analysts' verdicts on incidents: ``amlhp alerts-feedback`` -> ``amlhp.feedback`` -> the
alert stage (and ``amlhp train --feedback``).

An analyst acknowledges an incident (``ack``), confirms it (``confirmed``) or calls it a
false positive (``false_positive``), from any machine: one ``amlhp.feedback`` row on a
compacted topic keyed by the incident id (the latest verdict per incident is what
counts), carrying what the stage needs to find the incident (gateway, host, role, kind)
and the span and classes the training loop replays.

The alert stage reads the whole topic at start and follows it (every process reads all
of it, whatever verdict partitions it owns, as it does the device inventory), and applies
each verdict on the next clock tick of the incident's gateway's partition, so the state
it changes is written in an event of that partition:

* ``false_positive`` closes the incident (status ``closed``, reason ``false_positive``);
* ``ack`` and ``confirmed`` revise it (status ``updated``, the reason the verdict);

every later row of the incident carries the verdict in ``feedback``. A verdict the
incident already has is not applied again (a restart re-reads the topic). A false
positive given with ``--suppress DAYS`` (the analyst's consent) becomes an allow-list
rule for that host, gateway and kind, expiring after DAYS: the host's next incidents of
that kind are marked ``suppressed_by: fp-<incident id>``, kept and counted like those of
the file's rules.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from amlhp.alerts.engine import Engine
from amlhp.alerts.exceptions import AlertsError
from amlhp.alerts.state import GatewayState
from amlhp.alerts.store import GATEWAY, INCIDENT, Session
from amlhp.alerts.suppression import Rule
from amlhp.settings import Settings
from amlhp.wire import FEEDBACK, FEEDBACK_VERDICTS, feedback_schema, from_ipc, to_ipc

log = logging.getLogger(__name__)
FALSE_POSITIVE = "false_positive"


def feedback_row(
    incident: dict[str, Any],
    verdict: str,
    *,
    note: str | None = None,
    analyst: str | None = None,
    suppress_days: float | None = None,
    at_ns: int | None = None,
) -> dict[str, Any]:
    """One ``amlhp.feedback`` row on an incident (its latest alert row)."""
    if verdict not in FEEDBACK_VERDICTS:
        raise AlertsError(f"verdict {verdict!r}: expected one of {', '.join(FEEDBACK_VERDICTS)}")
    if suppress_days is not None and (verdict != FALSE_POSITIVE or suppress_days <= 0):
        raise AlertsError("a suppression rule comes only with a false positive, for days > 0")
    return {
        "incident_id": incident["incident_id"],
        "gateway": incident["gateway"],
        "host": incident["host"],
        "role": incident["role"],
        "kind": incident["kind"],
        "classes": list(incident.get("classes") or []),
        "first_seen_ns": incident["first_seen_ns"],
        "last_seen_ns": incident["last_seen_ns"],
        "verdict": verdict,
        "note": note,
        "analyst": analyst,
        "suppress_days": suppress_days,
        "at_ns": at_ns if at_ns is not None else time.time_ns(),
    }


def publish_feedback(settings: Settings, row: dict[str, Any]) -> None:
    """Write one verdict to the feedback topic (keyed by incident: compaction keeps the
    latest) and wait until the broker has it."""
    import pyarrow as pa
    from confluent_kafka import Producer

    producer = Producer(
        settings.kafka_config(**{"client.id": "amlhp-feedback", "enable.idempotence": True})
    )
    batch = pa.RecordBatch.from_pylist([row], schema=feedback_schema())
    producer.produce(settings.topic_feedback, key=row["incident_id"].encode(), value=to_ipc(batch))
    if producer.flush(30):
        raise AlertsError(f"the verdict did not reach {settings.topic_feedback} within 30 s")


def suppression_rule(item: dict[str, Any]) -> Rule | None:
    """The allow-list rule a false positive with the analyst's consent becomes."""
    days = item.get("suppress_days")
    if item["verdict"] != FALSE_POSITIVE or not days:
        return None
    given = datetime.fromtimestamp(item["at_ns"] / 1e9, tz=UTC)
    who = item.get("analyst") or "an analyst"
    return Rule.model_validate(
        {
            "id": f"fp-{item['incident_id']}",
            "reason": f"false positive ({who}): {item.get('note') or 'no note'}",
            "host": item["host"],
            "gateway": item["gateway"],
            "kind": [item["kind"]],
            "expires": given + timedelta(days=float(days)),
        }
    )


def apply_feedback(
    engine: Engine, partition: int, items: Iterable[dict[str, Any]]
) -> tuple[list[dict[str, Any]], set[str]]:
    """Apply verdicts to the incidents of gateways on ``partition``; returns the rows
    made and the incident ids done with (applied, or nothing left to apply them to)."""
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    by_gateway: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_gateway.setdefault(item["gateway"], []).append(item)
    for gateway, mine in sorted(by_gateway.items()):
        raw = engine.store.state.get(f"{GATEWAY}|{gateway}")
        if raw is None or GatewayState.from_json(raw["v"]).partition != partition:
            continue  # another partition's (or not seen here yet)
        session = Session(engine.store, gateway)
        for item in mine:
            done.add(item["incident_id"])
            key = f"{gateway}|{item['host']}|{item['role']}|{item['kind']}"
            inc = session.incident(key) if key in session.gw.open else None
            if inc is None or inc.incident_id != item["incident_id"]:
                continue  # closed before the verdict came: its rows stand
            if inc.feedback == item["verdict"]:
                continue  # applied before a restart
            inc.feedback = item["verdict"]
            ts = max(session.gw.last_ts_ns, inc.evidence.last_ns)
            if item["verdict"] == FALSE_POSITIVE:
                rows.append(engine.emit(inc, "closed", FALSE_POSITIVE, ts))
                session.put(INCIDENT, key, None)
                session.gw.open = [k for k in session.gw.open if k != key]
            else:
                rows.append(engine.emit(inc, "updated", item["verdict"], ts))
        engine.settle(session)
    return rows, done


def latest_verdicts(settings: Settings, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """The latest verdict per incident on the feedback topic (what compaction keeps)."""
    from amlhp.pipeline.kafka_io import read_topic_batches

    batches, _ = read_topic_batches(
        settings, settings.topic_feedback, lambda v: from_ipc(v, FEEDBACK), timeout_s
    )
    last: dict[str, dict[str, Any]] = {}
    for row in (r for b in batches for r in b.to_pylist()):
        last[row["incident_id"]] = row
    return [last[k] for k in sorted(last)]


def training_data(
    settings: Settings, out: Path, benign_class: str = "benign_iot"
) -> dict[str, Any]:
    """The packets behind analysts' verdicts, replayed from the raw topic into ``out``:
    one pcap per incident (:func:`amlhp.alerts.extract.extract`: the host's packets in
    the incident's span) and ``labels.yaml`` for ``amlhp train --feedback``: a false
    positive's packets as ``benign_class``, a confirmed incident's as its most common
    attack class. Acknowledged-only incidents are not labels and are left out."""
    import yaml

    from amlhp.alerts.extract import Selection, extract

    out.mkdir(parents=True, exist_ok=True)
    classes: dict[str, list[str]] = {}
    packets: dict[str, int] = {}
    used = []
    for item in latest_verdicts(settings):
        if item["verdict"] == FALSE_POSITIVE:
            label = benign_class
        elif item["verdict"] == "confirmed" and item["classes"]:
            label = str(item["classes"][0])
        else:
            continue
        selection = Selection(item["gateway"], item["host"], item["first_seen_ns"],
                              item["last_seen_ns"])  # fmt: skip
        name = f"{item['incident_id']}.pcap"
        stats = extract(settings, selection, out / name)
        if not stats.packets:
            log.warning("incident %s: no packet left on the raw topic (retention?)",
                        item["incident_id"])  # fmt: skip
            (out / name).unlink()
            continue
        classes.setdefault(label, []).append(name)
        packets[label] = packets.get(label, 0) + stats.packets
        used.append(item["incident_id"])
    doc = {"classes": classes}
    header = (
        "# Analysts' verdicts as labelled packets (amlhp alerts-feedback-data): false positives\n"
        f"# as {benign_class}, confirmed incidents as their class. Incidents: {', '.join(used)}\n"
    )
    if classes:
        (out / "labels.yaml").write_text(header + yaml.safe_dump(doc, sort_keys=True))
    return {"out": str(out), "incidents": len(used), "packets": packets}


class FeedbackReader:
    """Follows the whole feedback topic without a consumer group (every alert process
    reads all of it); :meth:`poll` returns the rows that came since the last call."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from amlhp.pipeline.kafka_io import consumer_config

        topic = settings.topic_feedback
        group = f"{settings.consumer_group}-feedback-reader"
        self.consumer = Consumer(consumer_config(settings, group, "amlhp-feedback-reader"))
        meta = self.consumer.list_topics(topic, timeout=30).topics.get(topic)
        parts = sorted(meta.partitions) if meta is not None and meta.partitions else []
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self.bad = 0

    def poll(self) -> list[dict[str, Any]]:
        from amlhp.wire import BatchDecodeError

        out: list[dict[str, Any]] = []
        for msg in self.consumer.consume(num_messages=500, timeout=0):
            if msg.error() is not None:
                continue
            try:
                out += from_ipc(msg.value() or b"", FEEDBACK).to_pylist()
            except BatchDecodeError as exc:
                self.bad += 1
                log.error("feedback message at offset %s skipped: %s", msg.offset(), exc)
        return out

    def close(self) -> None:
        self.consumer.close()


__all__ = [
    "FALSE_POSITIVE",
    "FeedbackReader",
    "apply_feedback",
    "feedback_row",
    "latest_verdicts",
    "publish_feedback",
    "suppression_rule",
    "training_data",
]
