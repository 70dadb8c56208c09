"""The engine over time: low-and-slow attacks the 10 s window never held raise incidents
of their kind at the minutes and hour scales; benign rhythms do not; state stays exact
when a stop splits a commit."""

from __future__ import annotations

import json
import random
import string
from typing import Any

import pyarrow as pa

from amlhp.alerts.engine import Engine, Store
from amlhp.alerts.policy import AlertPolicy
from amlhp.pipeline.incidents import latest
from amlhp.wire import verdict_schema

S = 1_000_000_000
T0 = 1_700_000_000 * S
ATTACKER, SERVER, DEVICE, CLOUD = "192.168.1.66", "192.168.1.10", "192.168.1.20", "52.1.2.3"
SYN, SYNACK, ACK, RST = 0x02, 0x12, 0x10, 0x14
TEAR = 1


def verdicts(rows: list[dict[str, Any]], gateway: str = "gw") -> pa.RecordBatch:
    full = []
    for i, row in enumerate(rows):
        full.append({
            "gateway": gateway, "ts_ns": row["ts"], "seq": i, "wire_len": 60, "linktype": 1,
            "src_ip": row["src"], "dst_ip": row["dst"], "src_port": row.get("sport"),
            "dst_port": row.get("dport"), "proto": row.get("proto", 6), "status": "ok",
            "label": row.get("label", "benign"), "decision": row.get("decision", "benign"),
            "malicious_score": row.get("score", 0.01), "tcp_flags": row.get("flags"),
            "dns_qname": row.get("qname"), "model_version": "m1",
        })  # fmt: skip
    return pa.RecordBatch.from_pylist(full, schema=verdict_schema())


def connection(ts: int, src: str, dst: str, sport: int, dport: int, **extra: Any) -> list[dict]:
    """A short TCP connection: SYN, SYN-ACK, ACK, then the server's RST."""
    base = {"src": src, "dst": dst, "sport": sport, "dport": dport, **extra}
    back = {"src": dst, "dst": src, "sport": dport, "dport": sport, **extra}
    return [
        {**base, "ts": ts, "flags": SYN},
        {**back, "ts": ts + 1_000_000, "flags": SYNACK},
        {**base, "ts": ts + 2_000_000, "flags": ACK},
        {**back, "ts": ts + 300_000_000, "flags": RST},
    ]


def run(rows: list[dict[str, Any]], policy: AlertPolicy | None = None, chunk: int = 500) -> list:
    rows = sorted(rows, key=lambda r: r["ts"])
    engine = Engine(policy or AlertPolicy(), model_version="m1")
    out = []
    batch = verdicts(rows)
    for lo in range(0, batch.num_rows, chunk):
        out += engine.process(batch.slice(lo, chunk), wall_s=0.0)
    return latest(out + engine.flush_all("end_of_input"))


def slow_guessing(port: int, minutes: int = 20, every_s: float = 7.0, **extra: Any) -> list[dict]:
    rows = []
    for k in range(int(minutes * 60 / every_s)):
        rows += connection(T0 + int(k * every_s * S), ATTACKER, SERVER, 40000 + k, port, **extra)
    return rows


def test_slow_ssh_guessing_is_brute_force_on_the_attacker() -> None:
    incidents = run(slow_guessing(22))
    assert [(i["host"], i["kind"]) for i in incidents] == [(ATTACKER, "brute_force")]
    incident = incidents[0]
    assert "T1110.001" in incident["techniques"]
    assert {e["detector"] for e in incident["evidence"]} == {"brute_force"}
    assert {e["scale"] for e in incident["evidence"]} >= {"minutes"}
    assert incident["opened_ns"] < T0 + 10 * 60 * S  # minutes, not the whole 20


def test_ftp_guessing_the_model_calls_c2_is_brute_force() -> None:
    rows = slow_guessing(21, minutes=10, every_s=2.0, label="c2_reverse_shell",
                         decision="malicious", score=0.95)  # fmt: skip
    kinds = {i["kind"] for i in run(rows) if i["host"] == ATTACKER}
    assert kinds == {"brute_force"}


def test_periodic_cloud_polling_and_mqtt_reconnects_raise_nothing() -> None:
    rows = []
    for k in range(600):  # an hour of polling every 6 s, answered
        rows += connection(T0 + k * 6 * S, DEVICE, CLOUD, 50000 + k % 10000, 443)
        rows += connection(T0 + k * 6 * S + S, DEVICE, SERVER, 51000 + k % 10000, 1883)
    assert run(rows, chunk=997) == []


def test_slow_sweep_of_one_port_over_the_lan() -> None:
    rows = []
    for k in range(100):  # one probe every 4 s, nobody answers
        rows.append({"ts": T0 + k * 4 * S, "src": ATTACKER, "dst": f"192.168.2.{k + 1}",
                     "sport": 33000, "dport": 23, "flags": SYN})  # fmt: skip
    incidents = run(rows)
    assert [(i["host"], i["kind"]) for i in incidents] == [(ATTACKER, "scan")]
    assert incidents[0]["techniques"] == ["T1046"]


def test_dns_tunnel_long_random_labels_under_one_domain() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_lowercase + string.digits
    rows = []
    for k in range(120):
        label = "".join(rng.choice(alphabet) for _ in range(30))
        rows.append({"ts": T0 + k * 2 * S, "src": DEVICE, "dst": SERVER, "sport": 40000 + k,
                     "dport": 53, "proto": 17, "qname": f"{label}.t.example.org"})  # fmt: skip
    for k in range(120):  # ordinary lookups from another host
        rows.append({"ts": T0 + k * 2 * S + 1, "src": ATTACKER, "dst": SERVER,
                     "sport": 41000 + k, "dport": 53, "proto": 17,
                     "qname": "time.example.com"})  # fmt: skip
    incidents = run(rows)
    assert [(i["host"], i["kind"]) for i in incidents] == [(DEVICE, "c2")]
    assert "T1071.004" in incidents[0]["techniques"]


def test_state_is_exact_when_a_stop_splits_a_commit() -> None:
    """A stop after some of a batch's records reached the changelog but before its
    gateway record: the batch comes again and the result equals an unbroken run."""
    rows = sorted(slow_guessing(22, minutes=12), key=lambda r: r["ts"])
    batch = verdicts(rows)
    chunks = [batch.slice(lo, 97) for lo in range(0, batch.num_rows, 97)]

    def unbroken() -> list[dict[str, Any]]:
        engine = Engine(AlertPolicy(), model_version="m1")
        out = [r for c in chunks for r in engine.process(c, wall_s=0.0)]
        return latest(out + engine.flush_all("end_of_input"))

    store = Store()
    out: list[dict[str, Any]] = []
    for i, chunk in enumerate(chunks):
        before = json.loads(json.dumps(store.state))
        rows_out = Engine(AlertPolicy(), store, "m1").process(chunk, wall_s=0.0)
        if i % 3 == TEAR:  # the stop: every record of this commit but the gateway's landed
            after = store.state
            torn = {k: v for k, v in after.items() if not k.startswith("g|")}
            torn |= {k: v for k, v in before.items() if k.startswith("g|")}
            store = Store(json.loads(json.dumps(torn)))
            rows_out = Engine(AlertPolicy(), store, "m1").process(chunk, wall_s=0.0)
        out += rows_out
    engine = Engine(AlertPolicy(), store, "m1")
    got = latest(out + engine.flush_all("end_of_input"))
    strip = [{k: v for k, v in r.items() if k != "emitted_at_ns"} for r in got]
    want = [{k: v for k, v in r.items() if k != "emitted_at_ns"} for r in unbroken()]
    assert strip == want
    assert strip  # the guessing raised its incident


def test_sketched_counts_do_not_depend_on_batching() -> None:
    """Past 32 distinct values a window's set becomes a sketch whose estimate depends on
    the order of its updates: the batching (and the JSON round trips between batches)
    must not change it, nor anything an incident reports."""
    rows = []
    for k in range(400):
        rows.append({"ts": T0 + k * 50_000_000, "src": ATTACKER, "dst": f"192.168.{k % 3}.{k}",
                     "sport": 33000, "dport": 1000 + k, "flags": SYN})  # fmt: skip
    one = run(rows, chunk=1000)
    many = run(rows, chunk=7)
    strip = [{k: v for k, v in i.items() if k != "emitted_at_ns"} for i in one]
    assert strip == [{k: v for k, v in i.items() if k != "emitted_at_ns"} for i in many]
    assert strip
