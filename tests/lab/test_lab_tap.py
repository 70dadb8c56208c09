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

from amlhp.encoders.readers import iter_packets
from amlhp.lab.runner import build_labeler
from amlhp.lab.topology import Topology
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings
from amlhp.streams.topics import ensure_pipeline_topics
from amlhp.wire import RAW, from_ipc
from tests.support.lab import reaped, require_lab, run_lab

pytestmark = [pytest.mark.slow, pytest.mark.live]


PREFIX = 64  # Ethernet + IP + transport headers: tells packets apart (ids, sequence numbers)


def by_label(frames: list[bytes]) -> dict[str, Counter[bytes]]:
    """Lab frames (Ethernet on lo) per class, as header prefixes; the rest is skipped."""
    labeler = build_labeler(Topology())
    lab_nets = Topology.capture_networks()
    control = Topology().control
    out: dict[str, Counter[bytes]] = {}
    for frame in frames:
        if frame[12:14] != b"\x08\x00" or len(frame) < 34:
            continue
        src, dst = IPv4Address(frame[26:30]), IPv4Address(frame[30:34])
        if control in (src, dst) or not any(src in n or dst in n for n in lab_nets):
            continue  # the lab's own readiness checks, or not lab traffic at all
        label = labeler.label(int(src), int(dst))
        out.setdefault(label, Counter())[frame[:PREFIX]] += 1
    return out


def test_amlhp_tap_on_lo_sees_the_lab_traffic(kafka_settings: Settings, tmp_path: Path) -> None:
    require_lab()
    ensure_pipeline_topics(kafka_settings)
    env = child_env(kafka_settings)
    amlhp = Path(sys.executable).with_name("amlhp")
    tap = subprocess.Popen(
        [str(amlhp), "tap", "--gateway", "gw-lab", "--interface", "lo", "--max-packets", "200000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    lab_out = tmp_path / "lab"
    with reaped(tap):
        time.sleep(3.0)  # the tap is listening
        assert tap.poll() is None, tap.communicate()
        manifest = run_lab(
            lab_out,
            "tap-run",
            scenarios=("benign", "syn_flood", "ssh_bruteforce"),
            packets=200,
            benign_packets=150,
            time_limit_s=20,
            seed=5,
        )
        time.sleep(1.0)
        os.kill(tap.pid, signal.SIGTERM)
        out, err = tap.communicate(timeout=120)
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["failed_packets"] == 0, err
    assert stats["kernel_dropped"] == 0, err  # the capture buffer holds download bursts
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
    tapped = by_label(frames)
    captured = by_label(
        [p.data for f in manifest["files"] for p in iter_packets(lab_out / f["file"])]
    )
    for label in ("benign", "dos_synflood", "ssh_bruteforce"):
        assert sum(captured[label].values()) == manifest["classes"][label] > 0
        # every packet tcpdump wrote was also tapped
        missed = captured[label] - tapped[label]
        assert not missed, (label, sum(missed.values()))
    for label in ("dos_synflood", "ssh_bruteforce"):
        # The tap runs longer than the captures, so it may see a few more attack packets
        # (connections closing after a capture stopped); benign devices talk all along.
        extra = sum(tapped[label].values()) - sum(captured[label].values())
        assert 0 <= extra <= 0.1 * sum(captured[label].values()) + 20, (label, extra)
    assert set(tapped) <= {"benign", "dos_synflood", "ssh_bruteforce"}
