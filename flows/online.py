"""Closed flows to flow verdicts (the flow worker's and ``amlhp flows score``'s one path).

Flow verdicts are ``amlhp.flow_verdict`` v1, one row per closed flow record; the schema
and its columns are :func:`amlhp.wire.flow_verdict_schema` (attribution groups:
:data:`amlhp.flows.shapley.GROUPS`), read back with ``amlhp.wire.from_ipc(value,
amlhp.wire.FLOW_VERDICT)``.

The worker refines online with what it has at hand (threshold and, for explained flows, the
attribution check); the offline evaluation also uses the Shapley re-ranking and the
device's earlier verdicts (see :mod:`amlhp.flows.refine`).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping, Sequence

import numpy as np
import pyarrow as pa
import torch

from amlhp.flows.artifact import FlowModel
from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import rows_of
from amlhp.flows.record import ROW_LEN, FlowState, anonymise
from amlhp.flows.shapley import GROUPS, exact_shapley
from amlhp.wire import flow_verdict_schema

History = MutableMapping[tuple[str, str], list[FlowState]]


class FlowScorer:
    """Scores closed flows with their device context and keeps that context up to date."""

    def __init__(self, model: FlowModel, *, explain_every: int = 0) -> None:
        self.model = model
        self.explain_every = explain_every
        self.scored = 0
        self.schema = flow_verdict_schema(GROUPS)

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
