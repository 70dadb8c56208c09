"""Closed flows to flow verdicts (the flow worker's and ``amlhp flows score``'s one path).

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
                                   explained); groups in the schema metadata
model_version     string           flow model identity
scored_at_ns      int64            when the verdict was made
================  ===============  ==================================================

The worker refines online with what it has at hand (threshold and, for explained flows, the
attribution check); the offline evaluation also uses the Shapley re-ranking and the
device's earlier verdicts (see :mod:`amlhp.flows.refine`).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence
from typing import Final

import numpy as np
import pyarrow as pa
import torch

from amlhp.flows.artifact import FlowModel
from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import rows_of
from amlhp.flows.exceptions import FlowStateError
from amlhp.flows.record import ROW_LEN, FlowState, anonymise
from amlhp.flows.shapley import GROUPS, exact_shapley

FLOW_VERDICT: Final = "amlhp.flow_verdict"
FLOW_VERDICT_VERSION: Final = "1"

History = MutableMapping[tuple[str, str], list[FlowState]]


def flow_verdict_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("end_ns", pa.int64(), nullable=False),
            pa.field("flow_id", pa.string(), nullable=False),
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
            pa.field("model_version", pa.string()),
            pa.field("scored_at_ns", pa.int64()),
        ],
        metadata={
            b"schema": FLOW_VERDICT.encode(),
            b"version": FLOW_VERDICT_VERSION.encode(),
            b"attribution_groups": ",".join(GROUPS).encode(),
        },
    )


def decode_flow_verdicts(data: bytes) -> pa.RecordBatch:
    """One Kafka message of the flow verdict topic; anything else raises FlowStateError."""
    try:
        reader = pa.ipc.open_stream(pa.py_buffer(data))
        meta = reader.schema.metadata or {}
        if meta.get(b"schema") != FLOW_VERDICT.encode():
            raise FlowStateError(f"not a {FLOW_VERDICT} batch")
        if meta.get(b"version") != FLOW_VERDICT_VERSION.encode():
            raise FlowStateError(f"unsupported {FLOW_VERDICT} version {meta.get(b'version')!r}")
        table = reader.read_all()
    except FlowStateError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
        raise FlowStateError(f"not a valid {FLOW_VERDICT} stream: {exc}") from exc
    want = [(f.name, f.type) for f in flow_verdict_schema()]
    if [(f.name, f.type) for f in table.schema] != want:
        raise FlowStateError(f"{FLOW_VERDICT} columns differ from version {FLOW_VERDICT_VERSION}")
    if table.num_rows == 0:
        return pa.RecordBatch.from_pylist([], schema=flow_verdict_schema())
    return table.combine_chunks().to_batches()[0]


class FlowScorer:
    """Scores closed flows with their device context and keeps that context up to date."""

    def __init__(self, model: FlowModel, *, explain_every: int = 0) -> None:
        self.model = model
        self.explain_every = explain_every
        self.scored = 0
        self.schema = flow_verdict_schema()

    def score(self, closed: Sequence[FlowState], history: History | None = None) -> pa.RecordBatch:
        """Verdicts of ``closed`` (scored in start order); ``history`` maps a device to its
        latest closed flows (most recent first) and is updated in place."""
        history = history if history is not None else {}
        depth = self.model.config.context
        rows = self.model.config.rows
        flows = sorted(closed, key=lambda s: (s.start_ns, s.key.text()))
        mats = np.empty((len(flows), rows, ROW_LEN), np.float32)
        contexts = []
        for i, flow in enumerate(flows):
            before = history.get(flow.key.device, [])
            contexts.append(min(len(before), depth))
            mats[i] = rows_of([flow, *before[:depth]], rows)
            history[flow.key.device] = [flow, *before][:depth]
        refiner = self.model.refiner
        net = self.model.network
        n = len(flows)
        explain = np.zeros(n, np.bool_)
        if self.explain_every > 0:
            explain = (self.scored + np.arange(n)) % self.explain_every == 0
        self.scored += n
        x = torch.from_numpy(mats)
        with torch.inference_mode():
            logits = net(x).float().numpy() if n else np.zeros((0, len(self.model.classes)))
        probs = softmax(logits, refiner.temperature) if n else np.zeros((0, 0), np.float32)
        pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        conf = probs[np.arange(n), pred] if n else np.zeros(0, np.float32)
        attributions: list[list[float] | None] = [None] * n
        consistent: list[bool | None] = [None] * n
        idx = np.flatnonzero(explain)
        if idx.size:
            phi, _ = exact_shapley(net, x[idx], temperature=refiner.temperature)
            ok = refiner.consistent(phi, pred[idx])
            for j, row in enumerate(idx.tolist()):
                attributions[row] = [float(v) for v in phi[j, :, pred[row]]]
                consistent[row] = bool(ok[j])
        uncertain = [bool(conf[i] < refiner.threshold or consistent[i] is False) for i in range(n)]
        classes = self.model.classes
        columns = {
            "gateway": [f.key.gateway for f in flows],
            "ts_ns": [f.start_ns for f in flows],
            "end_ns": [f.last_ns for f in flows],
            "flow_id": [f.flow_id for f in flows],
            "device_ip": [f.key.device_ip for f in flows],
            "remote_ip": [anonymise(f.key.remote_ip) for f in flows],
            "proto": [f.key.proto for f in flows],
            "device_port": [f.key.device_port for f in flows],
            "remote_port": [f.key.remote_port for f in flows],
            "packets": [f.packets for f in flows],
            "bytes": [f.total_bytes for f in flows],
            "first_seq": [f.first_seq for f in flows],
            "last_seq": [f.last_seq for f in flows],
            "context_flows": contexts,
            "label": [classes[int(c)] for c in pred],
            "class_id": [int(c) for c in pred],
            "confidence": [float(c) for c in conf],
            "uncertain": uncertain,
            "consistent": consistent,
            "probs": [[float(v) for v in p] for p in probs],
            "attributions": attributions,
            "model_version": [self.model.version] * n,
            "scored_at_ns": [time.time_ns()] * n,
        }
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)
