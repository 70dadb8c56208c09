"""The alert stage on the real broker: the stream's incidents are ``amlhp alerts``' incidents,
and stops in the middle of its backlog (SIGKILL and SIGTERM) lose no update and store no
row twice."""

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
from tests.support.incidents import comparable
from tests.support.kafka import committed_offsets

pytestmark = pytest.mark.slow

IDLE_S = 20.0
#: the stops in the middle of the backlog, one per alert process
STOPS = (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL)


@pytest.fixture
def alert_settings(pipeline_settings: Settings) -> Settings:
    return pipeline_settings.model_copy(update={"alert_idle_close_s": IDLE_S})


def _start(settings: Settings, tmp_path: Path, name: str, *args: str) -> StageProcess:
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    return start_stage(name, list(args), tmp_path / "logs", env)


def _tap(settings: Settings, capture: Path, gateway: str) -> int:
    stop = threading.Event()
    tap = Tap(settings, gateway, batch_size=300)
    packets = pcap_packets([capture], stop=stop, keep_timestamps=True)
    stats = run_tap(tap, packets, stop=stop)
    assert stats.failed_packets == 0
    return stats.packets


def _alert_messages(settings: Settings) -> int:
    """Messages on the alert topic so far (its partitions' high-water marks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers,
                         "group.id": "alert-watch", "enable.auto.commit": False})  # fmt: skip
    try:
        tps = [TopicPartition(settings.topic_alerts, p) for p in range(settings.partitions)]
        return sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
    finally:
        consumer.close()


def _committed_share(settings: Settings, group: str) -> tuple[int, int]:
    """(verdict messages the group has committed, verdict messages on the topic)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})  # fmt: skip
    try:
        tps = [TopicPartition(settings.topic_verdicts, p) for p in range(settings.partitions)]
        ends = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        done = sum(max(tp.offset, 0) for tp in committed_offsets(consumer, tps))
        return done, ends
    finally:
        consumer.close()


def _open_incident(settings: Settings) -> dict[str, Any]:
    """An incident the alert topic shows open now (it will be closed idle, later)."""
    from amlhp.pipeline.incidents import topic_incidents

    still = [r for r in topic_incidents(settings) if r["status"] != "closed"]
    assert still, "every incident closed before the last stage: nothing to suppress"
    return still[0]


def test_stream_incidents_equal_offline_through_restarts_mid_backlog(
    alert_settings: Settings, demo_capture: Path, tmp_path: Path
) -> None:
    """The alert stage starts on a backlog (the lab demo capture and short versions of the
    slow scenarios with ARP cache poisoning, two gateways) and is stopped in the middle of
    it four times (SIGTERM, SIGKILL, SIGTERM, SIGKILL): its incidents still equal
    ``amlhp alerts`` offline, no update lost and no row twice (readers de-duplicate on
    incident and revision, as the alert dataset does after a SIGKILL's re-emission)."""
    from tests.support.slow_scenarios import write_slow_scenarios

    settings = alert_settings
    slow = write_slow_scenarios(tmp_path / "slow.pcap", minutes=20, poisoning=True)
    verdicts, alerts_dir = tmp_path / "verdicts", tmp_path / "alerts"
    group = settings.consumer_group
    procs = [
        _start(settings, tmp_path, "worker", "worker"),
        _start(settings, tmp_path, "sink", "sink", "--out", str(verdicts), "--roll-seconds", "1"),
        _start(settings, tmp_path, "alert-sink", "alerts-sink", "--out", str(alerts_dir),
               "--roll-seconds", "0.5"),
    ]  # fmt: skip
    wait_groups_ready(settings, [group, f"{group}-sink", f"{group}-alerts-sink"], procs, 180.0)
    stops: list[tuple[str, int, int]] = []
    try:
        sent = {"gw-1": _tap(settings, demo_capture, "gw-1"), "gw-2": _tap(settings, slow, "gw-2")}
        expected = {gw: (0, n) for gw, n in sent.items()}
        ledger = wait_accounted(settings, verdicts, expected, procs, timeout_s=240)
        assert ledger.complete, ledger.as_dict()
        # the whole verdict backlog waits; each alert process is stopped as soon as it
        # has published alerts beyond the last one's
        for n, sig in enumerate(STOPS):
            seen = _alert_messages(settings)
            stage = _start(settings, tmp_path, f"alerts-{n}", "alerts-stage", "--metrics-port",
                           "-1")  # fmt: skip
            procs.append(stage)  # stopped at the end whatever happens
            deadline = time.monotonic() + 120
            while _alert_messages(settings) <= seen and time.monotonic() < deadline:
                stage.check_alive()
                time.sleep(0.05)
            stage.proc.send_signal(sig)
            stage.proc.wait(60)
            procs.remove(stage)
            stops.append((signal.Signals(sig).name, *_committed_share(settings, f"{group}-alerts")))
        # the last one runs with an allow-list file that does not exist yet; written once
        # the stage runs, its rule must mark the rows made from then on (the closes)
        allow = tmp_path / "allow.yaml"
        last = _start(settings.model_copy(update={"alert_suppressions": allow}), tmp_path,
                      "alerts-last", "alerts-stage", "--metrics-port", "-1")  # fmt: skip
        procs.append(last)
        deadline = time.monotonic() + 60
        while "does not exist (yet)" not in last.log_path.read_text(errors="replace"):
            last.check_alive()
            assert time.monotonic() < deadline, "the stage never read its allow-list"
            time.sleep(0.1)
        target = _open_incident(settings)
        before_ns = time.time_ns()
        allow.write_text(
            "rules:\n  - {id: under-test, reason: test, "
            f"gateway: {target['gateway']}, host: {target['host']}, kind: {target['kind']}}}\n"
        )
        incidents = wait_incidents(alerts_dir, procs, settle_s=IDLE_S + 4, timeout_s=240)
    finally:
        for proc in procs:
            proc.stop(timeout_s=20)

    # at least one stop came before the stage had committed its whole backlog
    assert any(done < ends for _, done, ends in stops), stops
    rows = alert_rows(alerts_dir)
    keys = [(r["incident_id"], r["revision"]) for r in rows]
    assert len(keys) == len(set(keys)), "an alert row was stored twice"
    opened = [r["incident_id"] for r in rows if r["status"] == "opened"]
    assert len(opened) == len(set(opened)) == len(incidents)
    assert all(i["status"] == "closed" for i in incidents), [i["status"] for i in incidents]
    # rows made before the rule file was written are not marked; the stage reloads it on
    # a clock tick, without a restart, and from the first marked row on every row the
    # rule covers is marked (and none it does not), not dropped
    assert not any(r["suppressed_by"] for r in rows if r["emitted_at_ns"] < before_ns)
    marked = [r for r in rows if r["suppressed_by"]]
    assert marked, "no row was marked: the allow-list was never reloaded"
    loaded_ns = min(r["emitted_at_ns"] for r in marked)
    assert loaded_ns - before_ns < 60e9, "the allow-list took a minute to take effect"
    later = [r for r in rows if r["emitted_at_ns"] >= loaded_ns]
    scope = (target["gateway"], target["host"], target["kind"])
    covered = [r for r in later if (r["gateway"], r["host"], r["kind"]) == scope]
    assert covered, "no row of the covered incident came after the rule"
    assert all(r["suppressed_by"] == "under-test" for r in covered), [
        (r["incident_id"], r["status"], (r["emitted_at_ns"] - loaded_ns) / 1e9, r["suppressed_by"])
        for r in covered
    ]
    assert not any(r["suppressed_by"] for r in later if r not in covered)

    scorer = load_scorer(default_model_path())
    policy = AlertPolicy.from_settings(settings)
    offline = []
    for gateway, capture in (("gw-1", demo_capture), ("gw-2", slow)):
        offline += alerts_from_captures([capture], scorer, policy, gateway=gateway).incidents
    assert len(offline) >= 14  # the lab demo's scenarios, the three slow ones, ARP
    assert {("gw-2", k) for k in ("brute_force", "scan", "c2", "mitm")} <= {
        (i["gateway"], i["kind"]) for i in offline
    }
    mitm = [i for i in incidents if i["kind"] == "mitm"]  # through the running stage
    assert [i["host"] for i in mitm] == ["127.73.0.66"]
    assert "mac=de:ad:be:ef:00:66" in str(mitm[0]["evidence"])
    stream_view, offline_view = comparable(incidents), comparable(offline)
    assert stream_view == offline_view, _difference(stream_view, offline_view, rows)


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
        diff = {k: (str(a[k])[:400], str(b[k])[:400]) for k in a if a[k] != b[k]}
        if diff:
            revisions = [(r["status"], r["reason"], r["revision"], r["packets"])
                         for r in rows if r["incident_id"] == iid]  # fmt: skip
            lines.append(
                f"differs {iid} {a['host']} {a['kind']} (stream, offline): {diff}; "
                f"stream rows {revisions}"
            )
    return "\n".join(lines)
