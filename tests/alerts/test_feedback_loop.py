"""The analyst feedback loop end to end on the real broker: a capture tapped to the raw
topic, its incidents on the alert topic, a false positive and a confirmation from
``amlhp alerts-feedback``, their packets replayed from the raw topic by ``amlhp
alerts-feedback-data``, and ``amlhp train --feedback`` training on them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from amlhp.alerts.engine import alert_batch
from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.data import DEMO_CAPTURE
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings
from amlhp.streams.tap import Tap, pcap_packets, run_tap
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import to_ipc
from tests.support.captures import SCANS_FROM, head_of_capture

pytestmark = [pytest.mark.kafka, pytest.mark.slow]
GATEWAY = "gw-feedback"


def _amlhp(settings: Settings, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args], env=child_env(settings),
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = done.stdout.strip()
    out: dict[str, Any] = json.loads(text if text.startswith("{\n") else text.splitlines()[-1])
    return out


def test_verdicts_become_labelled_packets_for_the_next_model(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    settings = kafka_settings
    ensure_pipeline_topics(settings)
    capture = head_of_capture(DEMO_CAPTURE, tmp_path / "head.pcap", 3000, skip=SCANS_FROM)
    stop = threading.Event()
    packets = pcap_packets([capture], stop=stop, keep_timestamps=True)
    assert run_tap(Tap(settings, GATEWAY, batch_size=300), packets, stop=stop).failed_packets == 0
    run = alerts_from_captures([capture], load_scorer(default_model_path()),
                               AlertPolicy.from_settings(settings), gateway=GATEWAY)  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    producer.produce(
        settings.topic_alerts, key=GATEWAY.encode(), value=to_ipc(alert_batch(run.rows))
    )
    assert producer.flush(30) == 0
    incidents = sorted(run.incidents, key=lambda i: -i["packets"])
    assert len(incidents) >= 2
    wrong, right = incidents[0], incidents[1]
    _amlhp(settings, "alerts-feedback", "false-positive", wrong["incident_id"], "--note", "test")
    _amlhp(settings, "alerts-feedback", "confirm", right["incident_id"])

    data = _amlhp(settings, "alerts-feedback-data", "-o", str(tmp_path / "fb"))
    assert data["incidents"] == 2
    labels = yaml.safe_load((tmp_path / "fb" / "labels.yaml").read_text())["classes"]
    attack = right["classes"][0]
    assert labels == {
        "benign_iot": [f"{wrong['incident_id']}.pcap"],
        attack: [f"{right['incident_id']}.pcap"],
    }
    # each incident's packets: at least those it counted, all from its host, from the
    # raw topic (the capture was tapped, not read)
    assert data["packets"]["benign_iot"] >= wrong["packets"]
    assert data["packets"][attack] >= right["packets"]

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"classes": {"benign_iot": [str(capture)]}}))
    summary = _amlhp(
        settings, "train", "--labels", str(base), "--feedback", str(tmp_path / "fb"),
        "-o", str(tmp_path / "model"), "--epochs", "1", "--threads", "1", "--json",
    )  # fmt: skip
    counts = summary["packets_per_class"]
    assert set(counts) == {"benign_iot", attack}
    assert counts[attack] == data["packets"][attack]
    assert counts["benign_iot"] == 3000 + data["packets"]["benign_iot"]
