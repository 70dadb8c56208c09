"""Dead letters, flow verdicts and explanations go through the one validating decoder.

Before the wire layer each of them had its own hand-written decoder that checked the name
and version only (the dead-letter one not even the columns); these tests pin down that a
batch with another name, version, a missing, mistyped or null required column is refused
with :class:`BatchDecodeError` for every one of them, and that the registry is complete.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import pytest

from amlhp.wire import (
    ALERT,
    DEAD_LETTER,
    DEVICE,
    ENCODED,
    EXPLANATION,
    FEEDBACK,
    FLOW_VERDICT,
    RAW,
    REGISTRY,
    VERDICT,
    BatchDecodeError,
    alert_schema,
    attribution_fields,
    attribution_groups,
    dead_letter_schema,
    device_schema,
    encoded_schema,
    explanation_schema,
    feedback_schema,
    flow_verdict_schema,
    from_ipc,
    raw_schema,
    schema_name,
    to_ipc,
    verdict_schema,
)

GROUPS = ("metadata", "addresses_ports", "packets", "payload", "context")
FIELDS = ("ip.ttl", "tcp.flags", "payload")


def dead_letters() -> pa.RecordBatch:
    rows = [
        {
            "gateway": "gw-1",
            "seq": 7,
            "ts_ns": 1_700_000_000_000_000_000,
            "wire_len": 60,
            "linktype": 1,
            "reason": "non_ip",
            "stage": "encode",
            "origin_topic": "amlhp.raw",
            "origin_partition": 0,
            "origin_offset": 12,
            "detail": None,
            "data": b"\x00" * 60,
        },
        {
            "gateway": None,
            "seq": None,
            "ts_ns": None,
            "wire_len": None,
            "linktype": None,
            "reason": "invalid_batch",
            "stage": "encode",
            "origin_topic": "amlhp.raw",
            "origin_partition": 1,
            "origin_offset": 3,
            "detail": "not arrow",
            "data": b"junk",
        },
    ]
    return pa.RecordBatch.from_pylist(rows, schema=dead_letter_schema())


def flow_verdicts() -> pa.RecordBatch:
    rows = [
        {
            "gateway": "gw-1",
            "ts_ns": 10 + i,
            "end_ns": 20 + i,
            "flow_id": f"gw-1|10.0.0.2|x|6|1883|5000{i}|{10 + i}",
            "flow_seq": i,
            "device_ip": "10.0.0.2",
            "remote_ip": "x",
            "proto": 6,
            "device_port": 1883,
            "remote_port": 50000 + i,
            "packets": 4,
            "bytes": 400,
            "first_seq": 1,
            "last_seq": 4,
            "context_flows": i,
            "label": "benign",
            "class_id": 0,
            "confidence": 0.9,
            "uncertain": False,
            "consistent": True if i else None,
            "probs": [0.9, 0.1],
            "attributions": [0.1, 0.2, 0.3, 0.2, 0.1] if i else None,
            "model_version": "flow-1",
            "scored_at_ns": 99,
        }
        for i in range(2)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=flow_verdict_schema(GROUPS))


def explanations() -> pa.RecordBatch:
    rows = [
        {
            "gateway": "gw-1",
            "seq": 42,
            "ts_ns": 5,
            "model_version": "amlhp-test-1",
            "label": "mqtt_bruteforce",
            "class_id": 3,
            "score": 0.75,
            "attributions": [0.5, -0.25, 0.125],
            "samples": 8,
            "explained_at_ns": 6,
            "explain_ns": 1,
        }
    ]
    return pa.RecordBatch.from_pylist(rows, schema=explanation_schema(FIELDS))


def devices() -> pa.RecordBatch:
    rows = [
        {
            "gateway": "gw-1",
            "host": f"10.0.0.{i}",
            "device_type": "HueBridge" if i else "unknown",
            "confidence": 0.75 if i else 0.0,
            "flows": 8,
            "accepted_flows": 6 if i else 0,
            "votes": ["HueBridge=6"] if i else [],
            "first_seen_ns": 5,
            "last_seen_ns": 9,
            "model_version": "flowcnn-1",
            "updated_at_ns": 10,
        }
        for i in range(2)
    ]
    return pa.RecordBatch.from_pylist(rows, schema=device_schema())


def feedback() -> pa.RecordBatch:
    row = {
        "incident_id": "7fef8e00783595d5", "gateway": "gw-1", "host": "10.0.0.66",
        "role": "source", "kind": "scan", "classes": ["tcp_portscan"], "first_seen_ns": 5,
        "last_seen_ns": 9, "verdict": "false_positive", "note": "the printer's sweep",
        "analyst": "alice", "suppress_days": 30.0, "at_ns": 10,
    }  # fmt: skip
    return pa.RecordBatch.from_pylist([row], schema=feedback_schema())


#: name -> a valid batch of that schema, and a column that must not hold nulls
CASES: dict[str, tuple[Callable[[], pa.RecordBatch], str]] = {
    DEVICE: (devices, "device_type"),
    FEEDBACK: (feedback, "verdict"),
    DEAD_LETTER: (dead_letters, "reason"),
    FLOW_VERDICT: (flow_verdicts, "flow_id"),
    EXPLANATION: (explanations, "attributions"),
}
NAMES = list(CASES)


def with_metadata(batch: pa.RecordBatch, **changes: bytes) -> pa.RecordBatch:
    meta = dict(batch.schema.metadata)
    meta.update({k.encode(): v for k, v in changes.items()})
    return batch.replace_schema_metadata(meta)


def with_column(
    batch: pa.RecordBatch, name: str, field: pa.Field, values: pa.Array
) -> pa.RecordBatch:
    index = batch.schema.get_field_index(name)
    return batch.set_column(index, field, values)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(name: str) -> None:
    make, _ = CASES[name]
    batch = make()
    back = from_ipc(to_ipc(batch, compression="zstd"), name)
    assert back.equals(batch)
    assert back.schema.metadata == batch.schema.metadata


@pytest.mark.parametrize("name", NAMES)
def test_empty_batch_decodes_empty(name: str) -> None:
    make, _ = CASES[name]
    empty = make().slice(0, 0)
    back = from_ipc(to_ipc(empty), name)
    assert back.num_rows == 0
    assert back.schema.names == empty.schema.names


@pytest.mark.parametrize("name", NAMES)
def test_other_schema_name_is_refused(name: str) -> None:
    make, _ = CASES[name]
    other = next(n for n in NAMES if n != name)
    with pytest.raises(BatchDecodeError, match="expected a"):
        from_ipc(to_ipc(make()), other)
    with pytest.raises(BatchDecodeError, match=r"got schema 'amlhp\.bogus'"):
        from_ipc(to_ipc(with_metadata(make(), schema=b"amlhp.bogus")), name)
    with pytest.raises(BatchDecodeError, match="got schema None"):
        from_ipc(to_ipc(make().replace_schema_metadata(None)), name)


@pytest.mark.parametrize("name", NAMES)
def test_other_version_is_refused(name: str) -> None:
    make, _ = CASES[name]
    with pytest.raises(BatchDecodeError, match="version '99' is not supported"):
        from_ipc(to_ipc(with_metadata(make(), version=b"99")), name)


def mistyped(batch: pa.RecordBatch, column: str) -> pa.RecordBatch:
    """``column`` (an integer column) as int32, metadata kept."""
    return with_column(
        batch, column, pa.field(column, pa.int32()), batch.column(column).cast(pa.int32())
    )


@pytest.mark.parametrize("name", NAMES)
def test_missing_or_mistyped_column_is_refused(name: str) -> None:
    make, required = CASES[name]
    batch = make()
    ts = {DEAD_LETTER: "origin_offset", DEVICE: "first_seen_ns", FEEDBACK: "at_ns"}.get(
        name, "ts_ns"
    )
    for broken in (batch.drop_columns([required]), mistyped(batch, ts)):
        assert broken.schema.metadata == batch.schema.metadata
        with pytest.raises(BatchDecodeError, match="columns differ"):
            from_ipc(to_ipc(broken), name)


@pytest.mark.parametrize("name", NAMES)
def test_nulls_in_a_required_column_are_refused(name: str) -> None:
    make, required = CASES[name]
    batch = make()
    field = batch.schema.field(required)
    nulls = pa.nulls(batch.num_rows, field.type)
    with pytest.raises(BatchDecodeError, match=f"'{required}' holds nulls"):
        from_ipc(to_ipc(with_column(batch, required, field.with_nullable(True), nulls)), name)


@pytest.mark.parametrize("name", NAMES)
def test_garbage_and_truncation_are_refused(name: str) -> None:
    make, _ = CASES[name]
    message = to_ipc(make())
    for bad in (b"", b"not arrow at all", message[: len(message) // 2]):
        with pytest.raises(BatchDecodeError):
            from_ipc(bad, name)


def test_explanation_attributions_must_match_the_named_fields() -> None:
    batch = explanations()
    assert attribution_fields(batch.schema) == list(FIELDS)
    lying = with_metadata(batch, fields=b"ip.ttl,payload")
    with pytest.raises(BatchDecodeError, match="attributions do not match"):
        from_ipc(to_ipc(lying), EXPLANATION)


def test_list_entry_names_are_taken_from_the_message() -> None:
    """The attribution names are parameters (like P of encoded batches): other names, of
    the right count, decode."""
    other = ("a", "b")
    flows = flow_verdicts()
    renamed = flows.replace_schema_metadata(flow_verdict_schema(other).metadata)
    assert attribution_groups(from_ipc(to_ipc(renamed), FLOW_VERDICT).schema) == list(other)
    assert attribution_groups(flows.schema) == list(GROUPS)
    batch = explanations()
    abc = batch.replace_schema_metadata(explanation_schema(("x", "y", "z")).metadata)
    assert attribution_fields(from_ipc(to_ipc(abc), EXPLANATION).schema) == ["x", "y", "z"]


SCHEMAS: dict[str, pa.Schema] = {
    RAW: raw_schema(),
    ENCODED: encoded_schema(64),
    VERDICT: verdict_schema(),
    DEAD_LETTER: dead_letter_schema(),
    FLOW_VERDICT: flow_verdict_schema(GROUPS),
    EXPLANATION: explanation_schema(FIELDS),
    ALERT: alert_schema(),
    DEVICE: device_schema(),
    FEEDBACK: feedback_schema(),
}


#: verdict v2 added malicious_score, decision and ood_score; v3 the packet facts of the
#: behaviour detectors; alert v2 severity, confidence, score, techniques and evidence,
#: v3 the host's device type and confidence, v4 suppressed_by, community_ids and feedback;
#: flow verdict v2 flow_seq (the sink's de-dup key), v3 due_ns, device_initiated and the
#: attack model's kind, score and alarm (evidence for the alert stage); encoded v2 and
#: verdict v4 the ARP operation and sender MAC
VERSIONS = {RAW: "1", ENCODED: "2", VERDICT: "4", DEAD_LETTER: "1", FLOW_VERDICT: "3",
            EXPLANATION: "1", ALERT: "4", DEVICE: "1", FEEDBACK: "1"}  # fmt: skip


def test_registry_holds_every_schema_with_the_version_its_builder_writes() -> None:
    assert set(REGISTRY) == set(SCHEMAS)
    for name, schema in SCHEMAS.items():
        assert schema_name(schema) == (name, REGISTRY[name].version)
        assert REGISTRY[name].version == VERSIONS[name]
        expected = REGISTRY[name].expected(schema)
        assert [(f.name, f.type) for f in expected] == [(f.name, f.type) for f in schema]


def test_schema_names_are_the_wire_names() -> None:
    """The names are on the wire and in datasets: renaming one breaks every reader."""
    assert sorted(SCHEMAS) == [
        "amlhp.alert",
        "amlhp.deadletter",
        "amlhp.device",
        "amlhp.encoded",
        "amlhp.explanation",
        "amlhp.feedback",
        "amlhp.flow_verdict",
        "amlhp.raw",
        "amlhp.verdict",
    ]


def columns(schema: pa.Schema) -> list[str]:
    return [f"{f.name}:{f.type}{'' if f.nullable else '!'}" for f in schema]


def test_columns_are_those_of_version_1() -> None:
    """Wire compatibility: names, order, types and required flags of v1 (``!``: required)."""
    assert columns(dead_letter_schema()) == [
        "gateway:string", "seq:uint64", "ts_ns:int64", "wire_len:uint32", "linktype:uint16",
        "reason:string!", "stage:string!", "origin_topic:string!", "origin_partition:int32!",
        "origin_offset:int64!", "detail:string", "data:binary",
    ]  # fmt: skip
    assert columns(flow_verdict_schema(GROUPS)) == [
        "gateway:string!", "ts_ns:int64!", "end_ns:int64!", "flow_id:string!",
        "flow_seq:uint64!", "device_ip:string", "remote_ip:string", "proto:uint8",
        "device_port:uint16", "remote_port:uint16", "packets:int64", "bytes:int64",
        "first_seq:uint64", "last_seq:uint64", "context_flows:int8", "label:string",
        "class_id:int16", "confidence:float", "uncertain:bool", "consistent:bool",
        "probs:list<item: float>", "attributions:list<item: float>", "due_ns:int64",
        "device_initiated:bool", "attack_kind:string", "attack_score:float",
        "attack_alarm:bool", "model_version:string",
        "scored_at_ns:int64",
    ]  # fmt: skip
    assert flow_verdict_schema(GROUPS).metadata[b"attribution_groups"] == ",".join(GROUPS).encode()
    assert columns(explanation_schema(FIELDS)) == [
        "gateway:string!", "seq:uint64!", "ts_ns:int64!", "model_version:string!",
        "label:string!", "class_id:int16!", "score:float!", "attributions:list<item: float>!",
        "samples:int32!", "explained_at_ns:int64!", "explain_ns:int64!",
    ]  # fmt: skip
    meta = explanation_schema(FIELDS).metadata
    assert meta[b"fields"] == b"ip.ttl,tcp.flags,payload"
    assert meta[b"target"] == b"probability of the verdict's class"


def test_alert_v2_columns_and_an_old_version_refused() -> None:
    """Alert v2 carries severity, confidence, score, ATT&CK ids and the evidence list;
    a v1 batch is refused with a clear error (no reader guesses at missing columns)."""
    names = alert_schema().names
    assert names[9:14] == ["severity", "confidence", "score", "techniques", "evidence"]
    evidence = alert_schema().field("evidence").type.value_type
    assert [f.name for f in evidence] == ["detector", "scale", "kind", "strength", "facts"]
    old = alert_schema().with_metadata({b"schema": b"amlhp.alert", b"version": b"1"})
    with pytest.raises(BatchDecodeError, match="version '1' is not supported"):
        from_ipc(to_ipc(pa.RecordBatch.from_pylist([], schema=old)), ALERT)


def test_verdict_v3_carries_the_packet_facts() -> None:
    names = verdict_schema().names
    for name in ("tcp_flags", "payload_len", "dns_qname", "modbus_fc", "icmp_type"):
        assert name in names
    old = verdict_schema().with_metadata({b"schema": b"amlhp.verdict", b"version": b"2"})
    with pytest.raises(BatchDecodeError, match="version '2' is not supported"):
        from_ipc(to_ipc(pa.RecordBatch.from_pylist([], schema=old)), VERDICT)
