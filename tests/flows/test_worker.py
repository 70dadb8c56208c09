"""The table-backed flow agent: state that survives a restart, and a step done again
after a kill that publishes the same flow_seqs (the sink drops them). On the real broker,
the flow worker is SIGKILLed mid-run by the fault suite's ``flow-worker-sigkill`` scenario
(tests/chaos/test_chaos.py), which checks every flow against the offline assembler."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from amlhp.flows.artifact import load_flow_model
from amlhp.flows.online import FlowScorer
from amlhp.flows.worker import FlowRuntime, flow_messages

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


def test_a_step_done_again_after_a_kill_publishes_the_same_flow_seqs(
    flow_model_dir: Path,
) -> None:
    """Killed after publishing and before its state writes, a worker does the step again
    from the earlier state: the same flows under the same (gateway, flow_seq), which the
    sink's high-water marks drop; the next flows get new numbers."""
    from amlhp.pipeline.parquet_sink import HighWaterMarks

    model = load_flow_model(flow_model_dir)
    table: dict[bytes, bytes] = {}
    first, second = halves(time.time_ns())
    later = time.monotonic() + 60

    def runtime() -> FlowRuntime:
        one = FlowRuntime(model.config, FlowScorer(model, explain_every=1), idle_close_s=5)
        one.load(GATEWAY, list(table.items()), partition=0)
        return one

    def closed_by(one: FlowRuntime, batch: pa.RecordBatch) -> pa.RecordBatch:
        one.ingest(batch, partition=0)
        closed, gateways = one.idle(now=later)
        verdicts = one.score(closed)
        for _, key, value in one.writes(closed, gateways):
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return verdicts

    published = closed_by(runtime(), first)  # published; the writes are then thrown away
    table.clear()
    again = closed_by(runtime(), first)
    assert again.column("flow_seq").to_pylist() == published.column("flow_seq").to_pylist()
    assert again.column("flow_id").to_pylist() == published.column("flow_id").to_pylist()
    assert sorted(published.column("flow_seq").to_pylist()) == [0, 1]
    marks = HighWaterMarks("gateway", "flow_seq")
    kept, dropped = marks.keep_new(published)
    assert (kept.num_rows, dropped) == (2, 0)
    assert marks.keep_new(again)[1] == 2  # the re-published verdicts: all dropped
    after = closed_by(runtime(), second)  # the next step, from the written state
    assert after.column("flow_seq").to_pylist() == [2]  # the TCP flow's second record
    assert marks.keep_new(after)[0].num_rows == 1


def test_packets_in_no_flow_are_counted_by_reason(flow_model_dir: Path) -> None:
    """Packets in = packets in flows + packets put aside, each with its reason."""
    model = load_flow_model(flow_model_dir)
    frames = [
        tcp_frame(b"hello", out=True),
        udp_frame(b"x", "8.8.4.4", "8.8.8.8"),  # neither end local
        tcp_frame(b"hi", out=False)[:20],  # cut inside the IP header
    ]
    one = FlowRuntime(model.config, FlowScorer(model), idle_close_s=5)
    one.load(GATEWAY, [], partition=0)
    one.ingest(raw(frames, [0.0, 0.1, 0.2], gateway=GATEWAY), partition=0)
    unused = one.take_unused()
    assert unused.pop("no_local_endpoint") == 1
    assert sum(unused.values()) == 1, unused  # the broken frame, with the encoder's reason
    assert one.take_unused() == {}  # taken once
    closed, _ = one.idle(now=time.monotonic() + 60)
    assert [f.packets for f in closed] == [1]


def test_a_watermark_entry_of_an_older_worker_still_loads(flow_model_dir: Path) -> None:
    import struct

    model = load_flow_model(flow_model_dir)
    old = struct.pack("<iqq", 3, 41, 1_700_000_000_000_000_000)
    one = FlowRuntime(model.config, FlowScorer(model), idle_close_s=5)
    one.load(GATEWAY, [(f"w|{GATEWAY}".encode(), old)], partition=3)
    assert one.assembler.watermark_seq[GATEWAY] == 41
    assert one.scorer.emitted.get(GATEWAY, 0) == 0


def test_only_the_last_message_of_a_step_tells_the_new_clock() -> None:
    """A step's flows split into several messages: the alert stage judges a gateway's
    packets once a message's clock passed them, so the earlier parts repeat the clock
    told before and only the last one (after every flow of the step) moves it."""
    part = pa.RecordBatch.from_pydict({"flow_seq": list(range(1, 1201))})
    messages = flow_messages(part, told=5, clock=9, rows=500)
    assert [clock for clock, _ in messages] == [5, 5, 9]
    seqs = [s for _, chunk in messages for s in chunk.column("flow_seq").to_pylist()]
    assert seqs == list(range(1, 1201))
    # no flows closed: one empty message still tells the clock
    (only,) = flow_messages(part.slice(0, 0), told=5, clock=9)
    assert only[0] == 9
    assert only[1].num_rows == 0
