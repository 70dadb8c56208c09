"""The alert stage on the real broker: the stream's incidents are ``amlhp alerts``' incidents,
and a restart of the alert process keeps its open incidents and raises no duplicate."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.pipeline.children import StageProcess, child_env, start_stage
from amlhp.pipeline.incident_dataset import alert_rows, wait_incidents
from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted, wait_groups_ready
from amlhp.streams.tap import Tap, pcap_packets, run_tap
from tests.support.kafka import committed_offsets

pytestmark = pytest.mark.slow

IDLE_S = 20.0
#: what must agree between the stream's and the offline incidents (not the wall clocks,
#: nor the close reason: ``idle`` in the stream, ``end_of_input`` offline)
COMPARED = (
    "incident_id", "gateway", "host", "role", "kind", "first_seen_ns", "last_seen_ns",
    "opened_ns", "packets", "classes", "class_packets", "top_peers", "top_peer_packets",
    "top_ports", "sample_seqs", "model_version",
)  # fmt: skip


@pytest.fixture
def alert_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(update={"alert_idle_close_s": IDLE_S})


def _start(settings: Settings, tmp_path: Path, name: str, *args: str) -> StageProcess:
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    return start_stage(name, list(args), tmp_path / "logs", env)


def _comparable(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in incidents:
        item = {k: row[k] for k in COMPARED}
        item["mean_score"] = round(float(row["mean_score"]), 4)
        out.append(item)
    return sorted(out, key=lambda r: r["incident_id"])


def _tap(settings: Settings, capture: Path, gateway: str) -> int:
    stop = threading.Event()
    tap = Tap(settings, gateway, batch_size=300)
    packets = pcap_packets([capture], stop=stop, keep_timestamps=True)
    stats = run_tap(tap, packets, stop=stop)
    assert stats.failed_packets == 0
    return stats.packets


def test_stream_incidents_equal_offline_and_survive_a_restart(
    alert_settings: Settings, demo_capture: Path, tmp_path: Path
) -> None:
    settings = alert_settings
    verdicts, alerts_dir = tmp_path / "verdicts", tmp_path / "alerts"
    group = settings.consumer_group
    procs = [
        _start(settings, tmp_path, "worker", "worker"),
        _start(settings, tmp_path, "sink", "sink", "--out", str(verdicts), "--roll-seconds", "1"),
        _start(settings, tmp_path, "alerts-1", "alerts-stage", "--metrics-port", "-1"),
        _start(settings, tmp_path, "alert-sink", "alerts-sink", "--out", str(alerts_dir),
               "--roll-seconds", "0.5"),
    ]  # fmt: skip
    groups = [group, f"{group}-sink", f"{group}-alerts", f"{group}-alerts-sink"]
    wait_groups_ready(settings, groups, procs, 180.0)
    try:
        sent = _tap(settings, demo_capture, "gw-1")
        # Restart the alert process while incidents are open (before any idle close), once
        # it has committed every verdict: the state must come back from the changelogs.
        # A stop in the middle of the verdict backlog is not covered: it can lose one
        # event's incident updates (an incident then closes `quiet` short of its last
        # packets; seen in 1 of 3 runs), an open bug, not something this test may hide.
        ledger = wait_accounted(settings, verdicts, {"gw-1": (0, sent)}, procs, timeout_s=240)
        assert ledger.complete, ledger.as_dict()
        _wait_committed_to_end(settings, f"{group}-alerts", timeout_s=60)
        before = alert_rows(alerts_dir)
        assert any(r["status"] == "opened" for r in before), "no incident opened"
        procs[2].proc.send_signal(signal.SIGTERM)
        procs[2].proc.wait(60)
        opened_before = {r["incident_id"] for r in alert_rows(alerts_dir)}
        still_open = opened_before - {r["incident_id"] for r in before if r["status"] == "closed"}
        assert still_open, "every incident closed before the restart"
        procs[2] = _start(settings, tmp_path, "alerts-2", "alerts-stage", "--metrics-port", "-1")
        incidents = wait_incidents(alerts_dir, procs, settle_s=IDLE_S + 4, timeout_s=180)
    finally:
        for proc in procs:
            proc.stop(timeout_s=20)

    rows = alert_rows(alerts_dir)
    assert opened_before, "the restart happened before any alert was stored"
    # no duplicate: one row per (incident, revision), one `opened` per incident
    keys = [(r["incident_id"], r["revision"]) for r in rows]
    assert len(keys) == len(set(keys)), "an alert row was emitted twice"
    opened = [r["incident_id"] for r in rows if r["status"] == "opened"]
    assert len(opened) == len(set(opened)) == len(incidents)
    assert all(i["status"] == "closed" for i in incidents), [i["status"] for i in incidents]
    assert {i["reason"] for i in incidents} <= {"quiet", "idle"}
    assert any(i["reason"] == "idle" for i in incidents)  # the last ones close when idle

    offline = alerts_from_captures(
        [demo_capture],
        load_scorer(default_model_path()),
        AlertPolicy.from_settings(settings),
        gateway="gw-1",
    ).incidents
    assert len(offline) >= 10  # the lab demo has 22 attack scenarios
    stream_view, offline_view = _comparable(incidents), _comparable(offline)
    assert stream_view == offline_view, _difference(stream_view, offline_view, rows)


def _wait_committed_to_end(settings: Settings, group: str, timeout_s: float) -> None:
    """Until ``group`` has committed the end of every verdict partition."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    tps = [TopicPartition(settings.topic_verdicts, p) for p in range(settings.partitions)]
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
            done = [max(tp.offset, 0) for tp in committed_offsets(consumer, tps)]
            if all(d >= e for d, e in zip(done, ends, strict=True)):
                return
            assert time.monotonic() < deadline, f"{group} committed {done} of {ends}"
            time.sleep(0.5)
    finally:
        consumer.close()


def _difference(
    stream: list[dict[str, Any]], offline: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> str:
    """A short account of how the stream's incidents differ from the offline ones: the ids
    on one side only (with their alert rows' history), the fields that differ on both."""
    by_id = {r["incident_id"]: r for r in stream}
    off_id = {r["incident_id"]: r for r in offline}
    lines = []
    for iid in sorted(by_id.keys() ^ off_id.keys()):
        inc = by_id.get(iid) or off_id[iid]
        side = "stream" if iid in by_id else "offline"
        mine = [r for r in rows if r["incident_id"] == iid]
        history = [(r["status"], r["reason"], r["packets"]) for r in mine]
        lines.append(
            f"only {side}: {iid} {inc['host']} {inc['role']} {inc['kind']} packets "
            f"{inc['packets']} seen {inc['first_seen_ns']}..{inc['last_seen_ns']} {history}"
        )
    for iid in sorted(by_id.keys() & off_id.keys()):
        a, b = by_id[iid], off_id[iid]
        diff = {k: (str(a[k])[:80], str(b[k])[:80]) for k in a if a[k] != b[k]}
        if diff:
            revisions = [(r["status"], r["reason"], r["revision"], r["packets"])
                         for r in rows if r["incident_id"] == iid]  # fmt: skip
            lines.append(
                f"differs {iid} {a['host']} {a['kind']} (stream, offline): {diff}; "
                f"stream rows {revisions}"
            )
    return "\n".join(lines)
