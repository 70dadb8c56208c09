"""The table-backed flow agent: state that survives a restart, on the real broker too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from amlhp.flows.artifact import load_flow_model
from amlhp.flows.online import FlowScorer
from amlhp.flows.worker import FlowRuntime
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings
from amlhp.wire import FLOW_VERDICT, from_ipc, to_ipc

from .conftest import raw, tcp_frame, udp_frame

GATEWAY = "gw-restart"


def halves(now_ns: int) -> tuple[pa.RecordBatch, pa.RecordBatch]:
    """Ten packets of one TCP flow (plus one DNS packet), split 6 / 5 around a restart."""
    t0 = (now_ns - 1_700_000_000_000_000_000) / 1e9  # raw() counts from T0
    frames = [tcp_frame(b"p%d" % i, out=i % 2 == 0) for i in range(10)]
    frames.insert(3, udp_frame(b"dns?", "192.168.1.10", "8.8.8.8"))
    times = [t0 + 0.01 * i for i in range(11)]
    first = raw(frames[:6], times[:6], gateway=GATEWAY, start_seq=0)
    second = raw(frames[6:], times[6:], gateway=GATEWAY, start_seq=6)
    return first, second


def tcp_verdict(batch: pa.RecordBatch) -> dict[str, object]:
    rows = [r for r in batch.to_pylist() if r["proto"] == 6]
    assert len(rows) == 1
    return rows[0]


def test_runtime_state_survives_a_restart_through_its_table_writes(flow_model_dir: Path) -> None:
    model = load_flow_model(flow_model_dir)
    table: dict[bytes, bytes] = {}

    def apply(writes: list[tuple[int, bytes, bytes | None]]) -> None:
        for _, key, value in writes:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value

    first, second = halves(time.time_ns())
    one = FlowRuntime(model.config, FlowScorer(model, explain_every=1), idle_close_s=5)
    one.load(GATEWAY, [], partition=1)
    closed, gws = one.ingest(first, partition=1)
    assert closed == []
    apply(one.writes(closed, gws))
    assert any(k.startswith(b"f|") for k in table)

    two = FlowRuntime(model.config, FlowScorer(model, explain_every=1), idle_close_s=5)
    two.load(GATEWAY, list(table.items()), partition=1)
    closed, gws = two.ingest(first, partition=1)  # re-delivered after the crash: no-op
    closed, gws = two.ingest(second, partition=1)
    apply(two.writes(closed, gws))
    later = time.monotonic() + 60
    assert two.idle(now=later, behind={1}) == ([], set())  # its packets may be queued
    closed, gws = two.idle(now=later, behind={0})
    verdicts = two.score(closed)
    apply(two.writes(closed, gws))
    row = tcp_verdict(verdicts)
    assert row["packets"] == 10
    assert (row["first_seq"], row["last_seq"]) == (0, 10)
    attributions = row["attributions"]
    assert isinstance(attributions, list)
    assert len(attributions) == 5
    assert not any(k.startswith(b"f|") for k in table)  # closed flows left the table
    assert any(k.startswith(b"h|") for k in table)  # ... into the device's history


# -- on the real broker ---------------------------------------------------------------------
def settings_env(settings: Settings) -> dict[str, str]:
    """The environment of a child ``amlhp`` with these settings, one torch thread."""
    return child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "amlhp.cli", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail(f"{self.log.name} exited: {self.log.read_text(errors='replace')[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    started: list[Proc] = []
    yield started
    for p in started:
        p.stop()


def wait_committed(settings: Settings, group: str, worker: Proc, timeout_s: float = 90.0) -> None:
    """Until the group has committed every raw partition up to its end."""
    from confluent_kafka import Consumer, TopicPartition

    from tests.support.kafka import committed_offsets

    c = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        parts = [TopicPartition(settings.topic_raw, p) for p in range(settings.partitions)]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            done = True
            for tp in committed_offsets(c, parts):
                _, high = c.get_watermark_offsets(tp, timeout=10)
                if high > 0 and tp.offset < high:
                    done = False
            if done:
                return
            worker.alive()
            time.sleep(0.5)
    finally:
        c.close()
    pytest.fail(f"group {group} did not commit the raw topic within {timeout_s}s")


def read_verdicts(settings: Settings, want: int, timeout_s: float) -> list[dict[str, object]]:
    from confluent_kafka import Consumer

    c = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": f"{settings.consumer_group}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([settings.topic_flow_verdicts])
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(rows) < want:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                rows.extend(from_ipc(msg.value() or b"", FLOW_VERDICT).to_pylist())
        end = time.monotonic() + 3  # a duplicate would show up now
        while time.monotonic() < end:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                rows.extend(from_ipc(msg.value() or b"", FLOW_VERDICT).to_pylist())
    finally:
        c.close()
    return rows


@pytest.mark.slow
def test_flow_worker_resumes_a_flow_after_being_killed(
    kafka_settings: Settings, flow_model_dir: Path, procs: list[Proc], tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    from amlhp.flows.sink import read_flow_verdicts
    from amlhp.streams.topics import ensure_pipeline_topics

    settings = kafka_settings
    ensure_pipeline_topics(settings)
    env = settings_env(settings)
    # Long enough that the first worker cannot close the flow idle before it is killed
    # (wait_committed takes seconds on a loaded machine), which would split the record.
    idle_close_s = 15.0
    worker_args = ["flows", "worker", "--model", str(flow_model_dir), "--idle-close",
                   str(idle_close_s)]  # fmt: skip
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    first, second = halves(time.time_ns())

    def send(batch: pa.RecordBatch) -> None:
        producer.produce(settings.topic_raw, key=GATEWAY.encode(), value=to_ipc(batch))
        assert producer.flush(30) == 0

    worker = Proc(worker_args, tmp_path / "worker-1.log", env)
    procs.append(worker)
    send(first)
    sent = time.monotonic()
    wait_committed(settings, f"{settings.consumer_group}-flows", worker)
    time.sleep(1.0)
    worker.alive()
    worker.stop(signal.SIGKILL)  # no goodbye: the table must come back from its changelog
    assert time.monotonic() - sent < idle_close_s - 2, "the first worker may have closed it"
    send(second)
    out = tmp_path / "flow-verdicts"
    procs.append(Proc(worker_args, tmp_path / "worker-2.log", env))
    procs.append(
        Proc(
            ["flows", "sink", "--out", str(out), "--roll-seconds", "1"], tmp_path / "sink.log", env
        )
    )
    rows = read_verdicts(settings, want=2, timeout_s=150)
    for p in procs[1:]:
        p.alive()
    tcp = [r for r in rows if r["proto"] == 6]
    assert len(tcp) == 1, rows  # one record for the flow, not one per worker life
    assert tcp[0]["packets"] == 10
    assert (tcp[0]["first_seq"], tcp[0]["last_seq"]) == (0, 10)
    assert tcp[0]["device_ip"] == "192.168.1.10"
    assert {r["proto"] for r in rows} == {6, 17}
    deadline = time.monotonic() + 30
    table = read_flow_verdicts(out)
    while table.num_rows < 2 and time.monotonic() < deadline:
        time.sleep(1)
        table = read_flow_verdicts(out)
    assert sorted(table.column("packets").to_pylist()) == [1, 10]
