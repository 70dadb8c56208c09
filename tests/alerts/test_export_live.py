"""``amlhp alerts-export`` on the real broker: the alert topic to a webhook that fails,
at least once, offsets committed after delivery, the undeliverable on the dead-letter
topic with its reason; and an analyst's verdict from ``amlhp alerts-feedback`` read back
from the feedback topic as the alert stage reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from amlhp.alerts.engine import alert_batch
from amlhp.pipeline.children import child_env
from amlhp.pipeline.kafka_io import read_topic_batches
from amlhp.settings import Settings
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import DEAD_LETTER, from_ipc, to_ipc
from tests.alerts.test_engine import port_scan, run, verdicts
from tests.support.receivers import webhook

pytestmark = [pytest.mark.kafka]


def _export(settings: Settings, url: str, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts-export", "--to", url, "--format", "eve",
         "--until-end", "--max-attempts", "3", *extra],
        env=child_env(settings.model_copy(update={"export_webhook_token": SecretStr("s3cret")})),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "s3cret" not in done.stderr
    stats: dict[str, object] = json.loads(done.stderr.strip().splitlines()[-1])
    return stats


def test_export_delivers_each_revision_and_dead_letters_what_is_refused(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    settings = kafka_settings
    ensure_pipeline_topics(settings)
    rows = run([verdicts(port_scan(), gateway="gw-a")]) + run(
        [verdicts(port_scan(t0=2_000_000_000 * 10**9), gateway="gw-b")]
    )
    refused = rows[-1]  # this one's receiver answers 422 (unprocessable) every time
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for gateway in ("gw-a", "gw-b"):
        mine = [r for r in rows if r["gateway"] == gateway]
        producer.produce(
            settings.topic_alerts, key=gateway.encode(), value=to_ipc(alert_batch(mine))
        )
    assert producer.flush(30) == 0

    def answer(n: int, body: bytes) -> int:
        record = json.loads(body)
        if (record["amlhp"]["incident_id"], record["amlhp"]["revision"]) == (
            refused["incident_id"], refused["revision"],
        ):  # fmt: skip
            return 422
        return 503 if n < 2 else 200  # the first two deliveries fail, then retried

    with webhook(answer) as hook:
        stats = _export(settings, hook.url)
        again = _export(settings, hook.url)  # the same group: everything was committed
    delivered = [json.loads(r.body) for r in hook.received if b'"event_type"' in r.body]
    keys = {(d["amlhp"]["incident_id"], d["amlhp"]["revision"]) for d in delivered}
    assert keys == {(r["incident_id"], r["revision"]) for r in rows}
    assert all(d["event_type"] == "alert" for d in delivered)
    assert all(r.headers["Authorization"] == "Bearer s3cret" for r in hook.received)
    assert stats["rows"] == len(rows)
    delivery = stats["delivery"]
    assert isinstance(delivery, dict)
    assert (delivery["delivered"], delivery["dead"]) == (len(rows) - 1, 1)
    assert delivery["retries"] >= 2
    assert again["messages"] == 0
    dead, bad = read_topic_batches(
        settings, settings.topic_dead_letter, lambda v: from_ipc(v, DEAD_LETTER)
    )
    assert bad == 0
    letters = [r for b in dead for r in b.to_pylist()]
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["reason"], letter["stage"]) == ("export_failed", "export")
    assert letter["origin_topic"] == settings.topic_alerts
    assert f"{refused['incident_id']}:{refused['revision']}" in letter["detail"]
    assert "HTTP 422" in letter["detail"]
    assert json.loads(letter["data"])["amlhp"]["incident_id"] == refused["incident_id"]


def test_a_verdict_round_trips_through_the_feedback_topic(kafka_settings: Settings) -> None:
    import time

    from confluent_kafka import Producer

    from amlhp.alerts.feedback import FeedbackReader

    settings = kafka_settings
    ensure_pipeline_topics(settings)
    rows = run([verdicts(port_scan(), gateway="gw-a")])
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(settings.topic_alerts, key=b"gw-a", value=to_ipc(alert_batch(rows)))
    assert producer.flush(30) == 0
    incident = rows[-1]["incident_id"]
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts-feedback", "false-positive", incident,
         "--note", "the lab's scanner", "--analyst", "ann", "--suppress-days", "2"],
        env=child_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reader = FeedbackReader(settings)
    got: list[dict[str, object]] = []
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        got = reader.poll()
        time.sleep(0.2)
    reader.close()
    assert [(g["incident_id"], g["verdict"], g["analyst"]) for g in got] == [
        (incident, "false_positive", "ann")
    ]
    assert (got[0]["host"], got[0]["kind"], got[0]["suppress_days"]) == (
        rows[-1]["host"], "scan", 2.0,
    )  # fmt: skip
