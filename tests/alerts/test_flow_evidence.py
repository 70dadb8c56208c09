"""Flow verdicts as evidence: applied at their end of life, once, the same however the
packets and the flows are batched and interleaved."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from amlhp.alerts import flow_evidence
from amlhp.alerts.engine import Engine
from amlhp.alerts.flow_evidence import due, take
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.store import Session, Store
from amlhp.flows.shapley import GROUPS
from amlhp.pipeline.incidents import latest
from amlhp.wire import flow_verdict_schema
from tests.alerts.test_engine import T0, S, verdicts

GUESSER, SERVER, QUIET = "10.0.0.66", "10.0.0.5", "10.0.0.9"
LIFETIME = 60 * S


def flow_rows(
    host: str, starts_s: list[float], *, alarm: bool = True, initiated: bool = True,
    kind: str = "brute_force", first_seq: int = 0,
) -> list[dict[str, Any]]:  # fmt: skip
    """Flow verdicts of ``host``: one per start (seconds after T0), in the v3 schema."""
    return [
        {
            "gateway": "gw",
            "ts_ns": T0 + int(t * S),
            "end_ns": T0 + int(t * S) + S,
            "flow_id": f"gw|{host}|{SERVER}|6|{40000 + k}|22|{T0 + int(t * S)}",
            "flow_seq": first_seq + k,
            "device_ip": host,
            "due_ns": T0 + int(t * S) + LIFETIME,
            "device_initiated": initiated,
            "attack_kind": kind,
            "attack_score": 0.97 if alarm else 0.1,
            "attack_alarm": alarm,
        }
        for k, t in enumerate(starts_s)
    ]


def flow_batch(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=flow_verdict_schema(GROUPS))


def guessing_packets(minutes: int = 12, every_s: float = 20.0) -> list[dict[str, Any]]:
    """A slow SSH guesser: one short benign-looking exchange every ``every_s`` (the model
    sees nothing), plus a quiet host's packets every 5 s so the clock moves on."""
    rows: list[dict[str, Any]] = []
    t = 0.0
    while t < minutes * 60:
        rows.append({"ts": T0 + int(t * S), "src": GUESSER, "dst": SERVER, "sport": 40000,
                     "dport": 22})  # fmt: skip
        rows.append({"ts": T0 + int(t * S) + 1000, "src": SERVER, "dst": GUESSER,
                     "sport": 22, "dport": 40000})  # fmt: skip
        t += every_s
    for k in range(int(minutes * 60 / 5) + 30):
        rows.append({"ts": T0 + k * 5 * S + 7, "src": QUIET, "dst": SERVER, "sport": 5000,
                     "dport": 1883})  # fmt: skip
    rows.sort(key=lambda r: int(r["ts"]))
    for i, row in enumerate(rows):
        row["seq"] = i
    return rows


POLICY = AlertPolicy(flow_alarms=(8.0, 8.0, 16.0), flow_min_share=0.5)


def run(packets: list[dict[str, Any]], flows: pa.Table, chunks: int, flow_chunks: int) -> Any:
    """The engine over packets in ``chunks`` batches, each preceded by the flows the flow
    worker would have told by then (``flow_chunks`` messages up to that batch's clock)."""
    engine = Engine(POLICY)
    out: list[dict[str, Any]] = []
    size = -(-len(packets) // chunks)
    given = 0
    rows = flows.to_pylist()
    for lo in range(0, len(packets), size):
        part = packets[lo : lo + size]
        clock = max(r["ts"] for r in part)
        ready = [r for r in rows[given:] if r["due_ns"] <= clock]
        step = max(1, -(-len(ready) // flow_chunks))
        for j in range(0, len(ready), step):
            engine.flows("gw", flow_batch(ready[j : j + step]), clock)
        given += len(ready)
        engine.flows("gw", None, clock)
        out += engine.process(verdicts(part), wall_s=0.0)
    out += engine.flush("gw", "end_of_input")
    return [{k: v for k, v in row.items() if k != "emitted_at_ns"} for row in out]


def test_alarmed_flows_raise_what_the_packets_alone_do_not() -> None:
    packets = guessing_packets()
    starts = [k * 20.0 for k in range(36)]
    flows = flow_batch(flow_rows(GUESSER, starts))
    without = run(packets, flow_batch([]), 1, 1)
    assert latest(without) == []
    incidents = latest(run(packets, flows, 1, 1))
    assert [(i["host"], i["kind"]) for i in incidents] == [(GUESSER, "brute_force")]
    flow = [e for e in incidents[0]["evidence"] if e["detector"] == "flow_model"]
    assert flow, incidents[0]["evidence"]
    assert {e["scale"] for e in flow} <= {"minutes", "hour"}
    counts = [int(dict(kv.split("=") for kv in e["facts"].split())["flows"]) for e in flow]
    assert max(counts) >= 8


@pytest.mark.parametrize(("chunks", "flow_chunks"), [(1, 1), (7, 1), (23, 3), (60, 9)])
def test_incidents_do_not_depend_on_batching(chunks: int, flow_chunks: int) -> None:
    packets = guessing_packets()
    flows = flow_batch(flow_rows(GUESSER, [k * 20.0 for k in range(36)]))
    assert run(packets, flows, chunks, flow_chunks) == run(packets, flows, 1, 1)


def test_few_alarmed_flows_among_many_do_not_count() -> None:
    packets = guessing_packets()
    starts = [k * 20.0 for k in range(36)]
    rows = flow_rows(GUESSER, starts, alarm=False)
    for row in rows[::3]:  # a third of its flows alarmed: below the share
        row["attack_alarm"], row["attack_score"] = True, 0.9
    assert latest(run(packets, flow_batch(rows), 3, 2)) == []


def test_flows_the_remote_end_started_are_not_the_devices() -> None:
    packets = guessing_packets()
    rows = flow_rows(GUESSER, [k * 20.0 for k in range(36)], initiated=False)
    assert latest(run(packets, flow_batch(rows), 1, 1)) == []


def test_republished_flows_count_once_and_waiting_windows_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    session = Session(store, "gw")
    rows = flow_rows(GUESSER, [0.0, 1.0, 12.0])
    window = POLICY.window_ns
    assert take(session, flow_batch(rows), T0, window) == 0
    take(session, flow_batch(rows), T0 + S, window)  # a restarted worker sends them again
    first = (T0 + LIFETIME) // window
    assert session.gw.flow_windows == [first, first + 1]
    assert session.gw.flow_clock == T0 + S
    ((flows, alarms),) = session.flow_window(first).hosts.values()
    assert flows == 2
    assert alarms["brute_force"] == [2, pytest.approx(1.94)]
    taken = due(session, first + 1)
    assert [f.hosts[GUESSER][0] for f in taken] == [2]
    assert session.gw.flow_windows == [first + 1]
    monkeypatch.setattr(flow_evidence, "MAX_WINDOWS", 3)
    many = flow_rows(GUESSER, [k * 10.0 for k in range(6)], first_seq=10)
    assert take(session, flow_batch(many), T0, window) == 3
    assert len(session.gw.flow_windows) == 3


def test_waiting_flows_survive_the_state_round_trip() -> None:
    store = Store()
    session = Session(store, "gw")
    take(session, flow_batch(flow_rows(GUESSER, [0.0, 5.0])), T0 + 9 * S, POLICY.window_ns)
    session.commit()
    again = Session(Store(json.loads(json.dumps(store.state))), "gw")
    assert (again.gw.flow_clock, again.gw.flow_seq) == (T0 + 9 * S, 1)
    (window,) = again.gw.flow_windows
    assert again.flow_window(window).hosts == session.flow_window(window).hosts


def test_flows_known_up_front_give_the_streams_incidents() -> None:
    """The offline command takes every flow first; the stream takes them as the flow
    worker's clock moves: the same incidents."""
    packets = guessing_packets()
    flows = flow_batch(flow_rows(GUESSER, [k * 20.0 for k in range(36)]))
    engine = Engine(POLICY)
    engine.flows("gw", flows, 2**63 - 1)  # every flow first, the packets in one batch
    out = engine.process(verdicts(packets), wall_s=0.0) + engine.flush("gw", "end_of_input")
    offline = [{k: v for k, v in row.items() if k != "emitted_at_ns"} for row in out]
    assert offline == run(packets, flows, 11, 2)
    assert latest(offline)


def test_the_flow_workers_device_header_names_the_hosts_the_alert_stage_reads() -> None:
    """A step's inventory entries (confidences float32: exact values here) ride on the
    flow message that tells its clock, so the alert stage names a host from the flows it
    has applied; a header it cannot read is refused (the stage counts it), and a message without one
    changes nothing."""
    from amlhp.alerts.stage import flow_devices
    from amlhp.flows.inventory import device_headers
    from amlhp.wire import FLOW_DEVICES_HEADER, device_schema

    def entry(gateway: str, host: str, kind: str, confidence: float) -> dict[str, Any]:
        row = dict.fromkeys(device_schema().names)
        row.update(gateway=gateway, host=host, device_type=kind, confidence=confidence)
        return row

    rows = [entry("gw", GUESSER, "camera", 0.5), entry("gw-2", QUIET, "unknown", 0.25),
            entry("gw", SERVER, "plug", 0.75)]  # fmt: skip
    batches = [(0, pa.RecordBatch.from_pylist(rows[:2], schema=device_schema())),
               (1, pa.RecordBatch.from_pylist(rows[2:], schema=device_schema()))]  # fmt: skip
    headers = device_headers(batches)
    assert sorted(headers) == ["gw", "gw-2"]
    named = flow_devices("gw", [("amlhp-flow-clock", b"5"), (FLOW_DEVICES_HEADER, headers["gw"])])
    assert named == {("gw", GUESSER): ("camera", 0.5), ("gw", SERVER): ("plug", 0.75)}
    assert flow_devices("gw-2", {FLOW_DEVICES_HEADER: headers["gw-2"]}) == {
        ("gw-2", QUIET): ("unknown", 0.25)
    }
    for bad in (b'{"h": "camera"}', b"not json", b"[1, 2]"):
        with pytest.raises(ValueError, match="not a devices header"):
            flow_devices("gw", [(FLOW_DEVICES_HEADER, bad)])
    assert flow_devices("gw", [("amlhp-flow-clock", b"5")]) == {}
    assert json.loads(headers["gw"]) == {GUESSER: ["camera", 0.5], SERVER: ["plug", 0.75]}
