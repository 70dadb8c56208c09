"""Schemas of the records derived from packets: dead letters, flow verdicts, explanations.

They live beside the packet schemas so that a reader of any topic decodes it with the
same validating :func:`amlhp.wire.from_ipc`. The two schemas whose metadata names the
entries of a list column (the flow verdicts' attribution groups, the explanations'
fields) take those names as an argument: they come from the model code
(:mod:`amlhp.flows.shapley`, :mod:`amlhp.model.packet_explain`), which the wire layer does
not import; a decoder takes them from the received schema.

Dead letters, ``amlhp.deadletter`` v1, one row per dead packet (``seq`` set) or per dead
message (``seq`` null, reason ``invalid_batch``): ``gateway`` (string), ``seq`` (uint64),
``ts_ns`` (int64), ``wire_len`` (uint32), ``linktype`` (uint16), ``reason`` (string,
required), ``stage`` (string, required), ``origin_topic`` (string, required),
``origin_partition`` (int32, required), ``origin_offset`` (int64, required), ``detail``
(string), ``data`` (binary, the refused bytes). See :mod:`amlhp.streams.deadletter`.

Flow verdicts, ``amlhp.flow_verdict`` v1, one row per closed flow record:

================  ===============  ==================================================
column            type             meaning
================  ===============  ==================================================
gateway           string           the gateway (tap) whose traffic it is
ts_ns             int64            first packet of the flow (ns since the epoch)
end_ns            int64            last packet of the flow
flow_id           string           gateway|device|remote|proto|dport|rport|start_ns
device_ip         string           the local device
remote_ip         string           the remote end as the model saw it (anonymised)
proto             uint8            IP protocol
device_port       uint16           device-side port (0 without ports)
remote_port       uint16           remote port
packets, bytes    int64            totals of the record
first_seq         uint64           tap sequence number of the first packet
last_seq          uint64           ... and of the last
context_flows     int8             preceding flows of the device in the matrix (0..5)
label, class_id   string, int16    predicted class
confidence        float32          calibrated probability of the class
uncertain         bool             confidence below the threshold, or (when explained)
                                   attributions inconsistent with the class's profile
consistent        bool             attribution check (null when not explained)
probs             list<float32>    calibrated probabilities of all classes
attributions      list<float32>    group Shapley values for the class (null: not
                                   explained); groups in the metadata
                                   ``attribution_groups``
model_version     string           flow model identity
scored_at_ns      int64            when the verdict was made
================  ===============  ==================================================

Packet explanations, ``amlhp.explanation`` v1, one row per explained packet (see
:mod:`amlhp.streams.explain_sample`):

===============  ==============  ====================================================
column           type            meaning
===============  ==============  ====================================================
gateway          string          the packet's gateway
seq              uint64          the packet's tap sequence number
ts_ns            int64           capture timestamp (ns since the epoch)
model_version    string          the model that scored and explained the packet
label            string          the verdict's class
class_id         int16           ... and its index
score            float32         the verdict's probability of that class
attributions     list<float32>   Shapley values of the class probability, one per
                                 field named in the schema metadata ``fields``
samples          int32           permutations sampled (the estimate's precision)
explained_at_ns  int64           when the explanation was made
explain_ns       int64           how long it took
===============  ==============  ====================================================

Device inventory, ``amlhp.device`` v1, one row per update of a host's entry (the
compacted topic ``amlhp.devices`` keeps the latest per ``gateway|host``; see
:mod:`amlhp.flows.inventory`):

=================  ==========  ==========================================================
column             type        meaning
=================  ==========  ==========================================================
gateway            string      the gateway that sees the host
host               string      the host's real address (inventories are for operators)
device_type        string      the flow model's class of the host, or ``unknown``
confidence         float32     share of the host's flows whose accepted verdict is it
flows              int64       flow records of the host scored so far
accepted_flows     int64       ... of which the flow model was sure (accepted verdicts)
votes              list<str>   accepted classes, most flows first (``class=n``)
first_seen_ns      int64       start of its first flow (capture clock)
last_seen_ns       int64       last packet of its latest flow
model_version      string      the flow model
updated_at_ns      int64       wall clock of this update
=================  ==========  ==========================================================

Alerts, ``amlhp.alert`` v4 (v3 lacked ``suppressed_by``, ``community_ids`` and ``feedback``; v2
``device_type`` and ``device_confidence``; v1 ``severity`` .. ``evidence``), one row per
revision
of an incident (see
:mod:`amlhp.alerts`): an incident is raised (``status`` ``opened``), revised at most every
update interval while evidence keeps coming (``updated``) and ``closed`` after a quiet
period; every row carries the incident's whole state at that revision, so the latest row
of an ``incident_id`` is the incident.

================  ===============  ==================================================
column            type             meaning
================  ===============  ==================================================
gateway           string           the gateway whose traffic raised the incident
ts_ns             int64            event time of this revision (capture clock)
incident_id       string           stable id: gateway, host, role, kind, first packet
revision          int32            0 for ``opened``, then +1 per row
status            string           ``opened``, ``updated`` or ``closed``
reason            string           why this row: ``threshold``, ``update``, ``quiet``
                                   (event time passed the quiet period), ``idle`` (no
                                   verdicts of the gateway for a while, wall clock) or
                                   ``end_of_input`` (offline)
host              string           the host's real address (alerts are for operators)
role              string           ``source`` (it sends the attack) or ``target``
kind              string           ``scan``, ``brute_force``, ``dos``, ``c2``,
                                   ``exfiltration``, ``exploit``, ``ics``
severity          string           ``low``, ``medium``, ``high``, ``critical``
confidence        float32          1 - exp(-score)
score             float32          fused evidence score (1: one detector at threshold)
techniques        list<string>     MITRE ATT&CK (and ATT&CK for ICS) technique ids
evidence          list<struct>     per detector and scale: ``detector``, ``scale``
                                   (seconds, minutes, hour), ``kind``, ``strength``
                                   (measure / threshold), ``facts`` ("k=v ...")
first_seen_ns     int64            first packet counted in the incident
last_seen_ns      int64            last packet counted so far
opened_ns         int64            event time of the packet that raised the incident
packets           int64            packets counted (decision ``malicious``)
mean_score        float32          their mean ``malicious_score``
classes           list<string>     attack classes, most packets first
class_packets     list<int64>      ... and their packet counts
top_peers         list<string>     peers (the other end), most packets first
top_peer_packets  list<int64>      ... and their packet counts
top_ports         list<uint16>     service ports, most packets first
top_port_packets  list<int64>      ... and their packet counts
distinct_peers    int32            peers seen (capped at the policy's tracking limit)
distinct_ports    int32            service ports seen (capped likewise)
sample_seqs       list<uint64>     a few packets' tap sequence numbers (same gateway),
                                   for drill-down into the verdict dataset
explanation_seq   uint64           a packet of the incident that the worker's
                                   explanation sampler picks (null: none)
model_version     string           the model whose verdicts raised it
device_type       string           the host's device type from the device inventory
                                   when known at this revision (null: not known)
device_confidence float32          ... and the inventory's confidence in it
suppressed_by     string           the allow-list rule that covers the incident (null:
                                   none; :mod:`amlhp.alerts.suppression`)
community_ids     list<string>     Community ID flow hashes of the sample packets'
                                   flows, to find them in Zeek or Suricata logs
feedback          string           an analyst's last verdict on it: ``ack``,
                                   ``confirmed`` or ``false_positive`` (null: none)
emitted_at_ns     int64            wall clock when the row was made
================  ===============  ==================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from amlhp.wire.exceptions import BatchDecodeError
from amlhp.wire.packets import metadata

ALERT: Final = "amlhp.alert"
DEVICE: Final = "amlhp.device"
DEVICE_VERSION: Final = "1"
FEEDBACK: Final = "amlhp.feedback"
FEEDBACK_VERSION: Final = "1"
#: an analyst's verdicts on an incident (``amlhp alerts-feedback``)
FEEDBACK_VERDICTS: Final = ("ack", "confirmed", "false_positive")
DEAD_LETTER: Final = "amlhp.deadletter"
FLOW_VERDICT: Final = "amlhp.flow_verdict"
#: the Kafka header of a flow verdict message: the flow worker's event clock (ns, ASCII
#: digits) for the message's gateway once its flows up to then are sent; a message of no
#: rows only tells the clock (amlhp.alerts.flow_evidence)
FLOW_CLOCK_HEADER: Final = "amlhp-flow-clock"
#: the Kafka header of the flow verdict message that tells a step's clock: the device
#: identities of the hosts the step's flows changed, JSON ``{host: [type, confidence]}``,
#: the same as the step's ``amlhp.device`` entries: the alert stage names hosts from it
#: in the order of the flows, not whenever it happens to read the device topic
FLOW_DEVICES_HEADER: Final = "amlhp-flow-devices"
EXPLANATION: Final = "amlhp.explanation"
#: the versions of these schemas that this code writes and reads (see the registry)
DEAD_LETTER_VERSION, FLOW_VERDICT_VERSION, EXPLANATION_VERSION = "1", "3", "1"
ALERT_VERSION: Final = "4"


def dead_letter_schema() -> pa.Schema:
    """One row per dead packet (``seq`` set) or per dead message (``seq`` null)."""
    return pa.schema(
        [
            pa.field("gateway", pa.string()),
            pa.field("seq", pa.uint64()),
            pa.field("ts_ns", pa.int64()),
            pa.field("wire_len", pa.uint32()),
            pa.field("linktype", pa.uint16()),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("stage", pa.string(), nullable=False),
            pa.field("origin_topic", pa.string(), nullable=False),
            pa.field("origin_partition", pa.int32(), nullable=False),
            pa.field("origin_offset", pa.int64(), nullable=False),
            pa.field("detail", pa.string()),
            pa.field("data", pa.binary()),
        ],
        metadata=metadata(DEAD_LETTER, DEAD_LETTER_VERSION),
    )


def flow_verdict_schema(groups: Sequence[str]) -> pa.Schema:
    """``amlhp.flow_verdict`` v3; ``groups`` name the entries of ``attributions``.

    v2 added ``flow_seq``: the gateway's count of flow verdicts before this one, which
    grows along the gateway's partition of the topic, so that a sink drops what a
    restarted flow worker publishes again (the idempotency key is (gateway, flow_seq)).
    v3 added ``due_ns`` (the record's end of life, ``ts_ns`` + the lifetime: when the
    alert stage applies it), ``device_initiated`` (the device sent its first packet) and
    the attack model's verdict: ``attack_kind`` (its most probable attack
    class, an incident kind), ``attack_score`` (``1 - P(benign)``) and ``attack_alarm``
    (the score reached the model's alarm); null where the worker runs no attack model."""
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("end_ns", pa.int64(), nullable=False),
            pa.field("flow_id", pa.string(), nullable=False),
            pa.field("flow_seq", pa.uint64(), nullable=False),
            pa.field("device_ip", pa.string()),
            pa.field("remote_ip", pa.string()),
            pa.field("proto", pa.uint8()),
            pa.field("device_port", pa.uint16()),
            pa.field("remote_port", pa.uint16()),
            pa.field("packets", pa.int64()),
            pa.field("bytes", pa.int64()),
            pa.field("first_seq", pa.uint64()),
            pa.field("last_seq", pa.uint64()),
            pa.field("context_flows", pa.int8()),
            pa.field("label", pa.string()),
            pa.field("class_id", pa.int16()),
            pa.field("confidence", pa.float32()),
            pa.field("uncertain", pa.bool_()),
            pa.field("consistent", pa.bool_()),
            pa.field("probs", pa.list_(pa.float32())),
            pa.field("attributions", pa.list_(pa.float32())),
            pa.field("due_ns", pa.int64()),
            pa.field("device_initiated", pa.bool_()),
            pa.field("attack_kind", pa.string()),
            pa.field("attack_score", pa.float32()),
            pa.field("attack_alarm", pa.bool_()),
            pa.field("model_version", pa.string()),
            pa.field("scored_at_ns", pa.int64()),
        ],
        metadata=metadata(FLOW_VERDICT, FLOW_VERDICT_VERSION, attribution_groups=",".join(groups)),
    )


def explanation_schema(fields: Sequence[str]) -> pa.Schema:
    """``amlhp.explanation`` v1; ``fields`` name the entries of ``attributions``."""
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("seq", pa.uint64(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("class_id", pa.int16(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("attributions", pa.list_(pa.float32()), nullable=False),
            pa.field("samples", pa.int32(), nullable=False),
            pa.field("explained_at_ns", pa.int64(), nullable=False),
            pa.field("explain_ns", pa.int64(), nullable=False),
        ],
        metadata=metadata(
            EXPLANATION,
            EXPLANATION_VERSION,
            fields=",".join(fields),
            target="probability of the verdict's class",
        ),
    )


def _names(schema: pa.Schema, key: bytes) -> list[str]:
    raw = (schema.metadata or {}).get(key, b"")
    return raw.decode("utf-8", "replace").split(",") if raw else []


def attribution_groups(schema: pa.Schema) -> list[str]:
    """The group names of a flow verdict batch's ``attributions``, from its metadata."""
    return _names(schema, b"attribution_groups")


def attribution_fields(schema: pa.Schema) -> list[str]:
    """The field names of an explanation batch's ``attributions``, from its metadata."""
    return _names(schema, b"fields")


def flow_verdict_like(received: pa.Schema) -> pa.Schema:
    """The flow verdict schema this code expects, groups taken from ``received``."""
    return flow_verdict_schema(attribution_groups(received))


def explanation_like(received: pa.Schema) -> pa.Schema:
    """The explanation schema this code expects, fields taken from ``received``."""
    return explanation_schema(attribution_fields(received))


def check_explanation_rows(batch: pa.RecordBatch) -> None:
    """Every row's ``attributions`` has one value per field named in the metadata."""
    fields = attribution_fields(batch.schema)
    lengths = pc.list_value_length(batch.column("attributions")).to_numpy(zero_copy_only=False)
    if fields and bool((lengths != len(fields)).any()):
        raise BatchDecodeError(f"{EXPLANATION} attributions do not match the named fields")


#: one entry of an incident's evidence: a detector's strongest finding at one scale
EVIDENCE: Final = pa.struct(
    [
        pa.field("detector", pa.string()),
        pa.field("scale", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("strength", pa.float32()),
        pa.field("facts", pa.string()),
    ]
)


def alert_schema() -> pa.Schema:
    """``amlhp.alert`` v4: one row per incident revision (see the module docstring)."""
    counts = pa.list_(pa.int64())
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("incident_id", pa.string(), nullable=False),
            pa.field("revision", pa.int32(), nullable=False),
            pa.field("status", pa.string(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("host", pa.string(), nullable=False),
            pa.field("role", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("severity", pa.string(), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("techniques", pa.list_(pa.string())),
            pa.field("evidence", pa.list_(EVIDENCE)),
            pa.field("first_seen_ns", pa.int64(), nullable=False),
            pa.field("last_seen_ns", pa.int64(), nullable=False),
            pa.field("opened_ns", pa.int64(), nullable=False),
            pa.field("packets", pa.int64(), nullable=False),
            pa.field("mean_score", pa.float32(), nullable=False),
            pa.field("classes", pa.list_(pa.string())),
            pa.field("class_packets", counts),
            pa.field("top_peers", pa.list_(pa.string())),
            pa.field("top_peer_packets", counts),
            pa.field("top_ports", pa.list_(pa.uint16())),
            pa.field("top_port_packets", counts),
            pa.field("distinct_peers", pa.int32()),
            pa.field("distinct_ports", pa.int32()),
            pa.field("sample_seqs", pa.list_(pa.uint64())),
            pa.field("explanation_seq", pa.uint64()),
            pa.field("model_version", pa.string()),
            pa.field("device_type", pa.string()),
            pa.field("device_confidence", pa.float32()),
            pa.field("suppressed_by", pa.string()),
            pa.field("community_ids", pa.list_(pa.string())),
            pa.field("feedback", pa.string()),
            pa.field("emitted_at_ns", pa.int64(), nullable=False),
        ],
        metadata=metadata(ALERT, ALERT_VERSION),
    )


def device_schema() -> pa.Schema:
    """``amlhp.device`` v1: one row per device inventory update (module docstring)."""
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("host", pa.string(), nullable=False),
            pa.field("device_type", pa.string(), nullable=False),
            pa.field("confidence", pa.float32(), nullable=False),
            pa.field("flows", pa.int64(), nullable=False),
            pa.field("accepted_flows", pa.int64(), nullable=False),
            pa.field("votes", pa.list_(pa.string())),
            pa.field("first_seen_ns", pa.int64(), nullable=False),
            pa.field("last_seen_ns", pa.int64(), nullable=False),
            pa.field("model_version", pa.string()),
            pa.field("updated_at_ns", pa.int64(), nullable=False),
        ],
        metadata=metadata(DEVICE, DEVICE_VERSION),
    )


def feedback_schema() -> pa.Schema:
    """``amlhp.feedback`` v1: an analyst's verdict on an incident (compacted topic
    ``amlhp.feedback``, key: the incident id), with what the alert stage needs to find the
    incident and the span ``amlhp train --feedback`` replays."""
    return pa.schema(
        [
            pa.field("incident_id", pa.string(), nullable=False),
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("host", pa.string(), nullable=False),
            pa.field("role", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),
            pa.field("classes", pa.list_(pa.string())),
            pa.field("first_seen_ns", pa.int64(), nullable=False),
            pa.field("last_seen_ns", pa.int64(), nullable=False),
            pa.field("verdict", pa.string(), nullable=False),
            pa.field("note", pa.string()),
            pa.field("analyst", pa.string()),
            pa.field("suppress_days", pa.float32()),
            pa.field("at_ns", pa.int64(), nullable=False),
        ],
        metadata=metadata(FEEDBACK, FEEDBACK_VERSION),
    )
