"""``amlhp tap --interface lo`` taps the lab's live traffic into the real Kafka broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from amlhp.encoders.schemas import RAW, from_ipc
from amlhp.lab.exceptions import LabBusyError
from amlhp.lab.runner import LabRun, RunOptions, build_labeler
from amlhp.lab.topology import Topology
from amlhp.settings import Settings
from amlhp.streams.topics import ensure_pipeline_topics

from .conftest import WORK_ROOT, require_lab

pytestmark = [pytest.mark.slow, pytest.mark.live]


def lab_labels(frames: list[bytes]) -> Counter[str]:
    """Label tapped frames (Ethernet on lo) by the lab's address rules; others are skipped."""
    labeler = build_labeler(Topology())
    lab_nets = Topology.capture_networks()
    counts: Counter[str] = Counter()
    for frame in frames:
        if frame[12:14] != b"\x08\x00" or len(frame) < 34:
            continue
        src, dst = IPv4Address(frame[26:30]), IPv4Address(frame[30:34])
        if any(src in n or dst in n for n in lab_nets):  # the capture filter of the lab
            counts[labeler.label(int(src), int(dst))] += 1
    return counts


def test_amlhp_tap_on_lo_sees_the_lab_traffic(kafka_settings: Settings, tmp_path: Path) -> None:
    require_lab()
    ensure_pipeline_topics(kafka_settings)
    env = dict(os.environ)
    env.update(
        {
            "AMLHP_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
            "AMLHP_TOPIC_RAW": kafka_settings.topic_raw,
        }
    )
    amlhp = Path(sys.executable).with_name("amlhp")
    tap = subprocess.Popen(
        [str(amlhp), "tap", "--gateway", "gw-lab", "--interface", "lo", "--max-packets", "200000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        time.sleep(3.0)  # the tap is listening
        assert tap.poll() is None, tap.communicate()
        options = RunOptions(
            out=tmp_path / "lab",
            workdir=WORK_ROOT / "tap-run",
            scenarios=("benign", "syn_flood", "ssh_bruteforce"),
            packets=200,
            benign_packets=150,
            time_limit_s=20,
            seed=5,
        )
        try:
            manifest = LabRun(options).run()
        except LabBusyError as exc:
            pytest.skip(f"another lab run is in progress: {exc}")
        time.sleep(1.0)
        os.kill(tap.pid, signal.SIGTERM)
        out, err = tap.communicate(timeout=120)
    finally:
        if tap.poll() is None:
            tap.kill()
            tap.wait()
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["failed_packets"] == 0, err
    assert stats["delivered_packets"] == stats["packets"] > 0

    consumer = Consumer(
        kafka_settings.kafka_config(
            **{
                "group.id": f"{kafka_settings.consumer_group}.lab-tap",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    frames: list[bytes] = []
    try:
        consumer.subscribe([kafka_settings.topic_raw])
        deadline = time.monotonic() + 60
        while len(frames) < stats["delivered_packets"] and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            batch = from_ipc(msg.value() or b"", RAW)
            assert set(batch.column("gateway").to_pylist()) == {"gw-lab"}
            frames.extend(batch.column("data").to_pylist())
    finally:
        consumer.close()
    assert len(frames) == stats["delivered_packets"]
    tapped = lab_labels(frames)
    for label in ("dos_synflood", "ssh_bruteforce"):
        # the attack's packets all fall inside its capture window: tcpdump and the tap agree
        assert tapped[label] == manifest["classes"][label] > 0, (label, tapped, manifest["classes"])
    assert tapped["benign"] >= manifest["classes"]["benign"] > 0
