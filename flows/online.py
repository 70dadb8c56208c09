"""Closed flows to flow verdicts (the flow worker's and ``amlhp flows score``'s one path).

Flow verdicts are ``amlhp.flow_verdict`` v2, one row per closed flow record; the schema
and its columns are :func:`amlhp.wire.flow_verdict_schema` (attribution groups:
:data:`amlhp.flows.shapley.GROUPS`), read back with ``amlhp.wire.from_ipc(value,
amlhp.wire.FLOW_VERDICT)``.

The worker refines online with what it has at hand (threshold and, for explained flows, the
attribution check); the offline evaluation also uses the Shapley re-ranking and the
device's earlier verdicts (see :mod:`amlhp.flows.refine`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import MutableMapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.flows.artifact import FlowModel
from amlhp.flows.attacks import attack_kind, attack_probability
from amlhp.flows.calibration import softmax
from amlhp.flows.dataset import rows_of
from amlhp.flows.exceptions import FlowArtifactError
from amlhp.flows.hidden_profile import distance
from amlhp.flows.numpy_net import NumpyFlowCNN
from amlhp.flows.record import (
    DIRECTION_OUT,
    HEAD_LEN,
    ROW_LEN,
    SLOT_START,
    FlowState,
    anonymise,
    empty_row,
)
from amlhp.flows.shapley import GROUPS, exact_shapley
from amlhp.wire import flow_verdict_schema

History = MutableMapping[tuple[str, str], list[FlowState]]
#: the flow worker explains about one flow in this many (chosen by flow id); an offline
#: path that must agree with it (the inventory of ``amlhp alerts``) uses the same
DEFAULT_EXPLAIN_EVERY = 20


def score_capture(path: Path, scorer: FlowScorer, gateway: str | None = None) -> pa.RecordBatch:
    """Flow verdicts of one capture file as one gateway (default: named by its path), the
    offline twin of the flow worker: the same assembler, scorer and device context."""
    from amlhp.encoders.readers import iter_raw_batches
    from amlhp.flows.assembler import FlowAssembler, iter_closed

    assembler = FlowAssembler(scorer.model.config)
    name = str(path) if gateway is None else gateway
    closed = sorted(
        iter_closed(assembler, iter_raw_batches(path, gateway=name)),
        key=lambda s: (s.start_ns, s.key.text()),
    )
    history: History = {}
    chunk = 2048  # the scorer's matrices of one call stay small; the order is kept
    parts = [scorer.score(closed[lo : lo + chunk], history) for lo in range(0, len(closed), chunk)]
    return pa.concat_batches(parts) if parts else scorer.score([], history)


class FlowScorer:
    """Scores closed flows with their device context and keeps that context up to date."""

    def __init__(
        self,
        model: FlowModel,
        *,
        attack: FlowModel | None = None,
        explain_every: int = 0,
        explain_ids: frozenset[str] | None = None,
    ) -> None:
        self.model = model
        #: the attack model (:mod:`amlhp.flows.attacks`), run over the same matrices
        self.attack = attack
        if attack is not None:
            if attack.alarm is None:
                raise FlowArtifactError(f"{attack.version} has no alarm: not an attack model")
            if attack.config != model.config:
                raise FlowArtifactError(
                    "the attack and device models assemble flows differently "
                    f"({attack.config.as_dict()} vs {model.config.as_dict()})"
                )
        self.explain_every = explain_every
        #: explain exactly these flows instead (``amlhp explain --incident``)
        self.explain_ids = explain_ids
        #: gateway -> how many verdicts it has had (the next ``flow_seq``); the flow
        #: worker keeps it in its durable state
        self.emitted: dict[str, int] = {}
        self._empty: dict[int, npt.NDArray[np.float32]] = {}
        self.schema = flow_verdict_schema(GROUPS)

    @property
    def _empty_head(self) -> npt.NDArray[np.float32]:
        return empty_row()[:HEAD_LEN]

    def _empty_parts(self, net: NumpyFlowCNN) -> npt.NDArray[np.float32]:
        if id(net) not in self._empty:
            self._empty[id(net)] = net.row_parts(empty_row()[None])[0]
        return self._empty[id(net)]

    @staticmethod
    def _parts_of(net: NumpyFlowCNN, flow: FlowState, attr: str) -> npt.NDArray[np.float32]:
        """A context flow's parts: kept since it was scored, or (after a restart, when
        the history came from the table) computed again from its row."""
        if getattr(flow, attr) is None:
            setattr(flow, attr, net.row_parts(flow.row()[None])[0])
        parts: npt.NDArray[np.float32] = getattr(flow, attr)
        return parts

    def _hidden(
        self,
        net: NumpyFlowCNN,
        attr: str,
        own: npt.NDArray[np.float32],
        heads: npt.NDArray[np.float32],
        flows: Sequence[FlowState],
        befores: Sequence[Sequence[FlowState]],
    ) -> npt.NDArray[np.float32]:
        """One network's hidden summaries of the flows' matrices: row 0's parts are
        computed here, once, and kept on the flow (``attr``) while it is context; the
        head slots (``heads``) are the same for every network."""
        n = len(flows)
        if n == 0:
            return np.zeros((0, net.h0_b.shape[0]), np.float32)
        for flow, part in zip(flows, net.row_parts(own), strict=True):
            setattr(flow, attr, part)
        parts = np.tile(self._empty_parts(net), (n, heads.shape[1], 1))
        for i, (flow, before) in enumerate(zip(flows, befores, strict=True)):
            parts[i, 0] = getattr(flow, attr)
            for r, prev in enumerate(before, start=1):
                parts[i, r] = self._parts_of(net, prev, attr)
        hidden: npt.NDArray[np.float32] = net.summary(*net.embed_heads(heads, parts))
        return hidden

    def explained(self, flow_id: str) -> bool:
        """Whether a flow gets Shapley attributions: about one in ``explain_every``,
        chosen by its id, so that the worker and the offline path explain the same flows
        however their flows are batched."""
        if self.explain_ids is not None:
            return flow_id in self.explain_ids
        if self.explain_every <= 0:
            return False
        digest = hashlib.blake2b(flow_id.encode(), digest_size=4).digest()
        return int.from_bytes(digest, "little") % self.explain_every == 0

    def score(self, closed: Sequence[FlowState], history: History | None = None) -> pa.RecordBatch:
        """Verdicts of ``closed`` (scored in start order); ``history`` maps a device to its
        latest closed flows (most recent first) and is updated in place."""
        history = history if history is not None else {}
        depth = self.model.config.context
        rows = self.model.config.rows
        net = self.model.numpy_network()
        flows = sorted(closed, key=lambda s: (s.start_ns, s.key.text()))
        n = len(flows)
        own = np.stack([f.row() for f in flows]) if n else np.zeros((0, ROW_LEN), np.float32)
        heads = np.tile(self._empty_head, (n, rows, 1))
        befores: list[list[FlowState]] = []
        matrices = []
        for i, flow in enumerate(flows):
            before = history.get(flow.key.device, [])[:depth]
            befores.append(before)
            heads[i, 0] = own[i, :HEAD_LEN]
            for r, prev in enumerate(before, start=1):
                heads[i, r] = prev.head_vector()
                heads[i, r, SLOT_START] = max(0, flow.start_ns - prev.start_ns) / 1e9
            if self.explained(flow.flow_id):
                matrices.append((i, rows_of([flow, *before], rows)))
            history[flow.key.device] = [flow, *before][:depth]
        contexts = [len(b) for b in befores]
        refiner = self.model.refiner
        hidden = self._hidden(net, "parts", own, heads, flows, befores)
        logits = net.head_out(hidden)
        probs = softmax(logits, refiner.temperature) if n else np.zeros((0, 0), np.float32)
        pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        conf = probs[np.arange(n), pred] if n else np.zeros(0, np.float32)
        attributions: list[list[float] | None] = [None] * n
        consistent: list[bool | None] = [None] * n
        idx = np.asarray([i for i, _ in matrices], np.int64)
        if idx.size:
            mats = np.stack([m for _, m in matrices])
            phi, _ = exact_shapley(net, mats, temperature=refiner.temperature)
            ok = refiner.consistent(phi, pred[idx])
            for j, row in enumerate(idx.tolist()):
                attributions[row] = [float(v) for v in phi[j, :, pred[row]]]
                consistent[row] = bool(ok[j])
        # out of its class's profile (flows/hidden_profile.py): unlike anything the class
        # had, however confident the softmax is
        profile = self.model.meta.get("hidden_profile")
        far = distance(profile, hidden, pred) > 1.0 if profile and n else np.zeros(n, np.bool_)
        uncertain = [
            bool(conf[i] < refiner.threshold or consistent[i] is False or far[i]) for i in range(n)
        ]
        kinds, scores, alarms = self._attacks(own, heads, flows, befores)
        lifetime = self.model.config.lifetime_ns
        classes = self.model.classes
        flow_seq = []
        for f in flows:
            seq = self.emitted.get(f.key.gateway, 0)
            self.emitted[f.key.gateway] = seq + 1
            flow_seq.append(seq)
        columns = {
            "gateway": [f.key.gateway for f in flows],
            "ts_ns": [f.start_ns for f in flows],
            "end_ns": [f.last_ns for f in flows],
            "flow_id": [f.flow_id for f in flows],
            "flow_seq": flow_seq,
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
            "probs": _float_lists(probs),
            "attributions": attributions,
            "due_ns": [f.start_ns + lifetime for f in flows],
            "device_initiated": [bool(f.head) and f.head[0][2] == DIRECTION_OUT for f in flows],
            "attack_kind": kinds,
            "attack_score": scores,
            "attack_alarm": alarms,
            "model_version": [self.model.version] * n,
            "scored_at_ns": [time.time_ns()] * n,
        }
        return pa.RecordBatch.from_pydict(columns, schema=self.schema)

    def _attacks(
        self,
        own: npt.NDArray[np.float32],
        heads: npt.NDArray[np.float32],
        flows: Sequence[FlowState],
        befores: Sequence[Sequence[FlowState]],
    ) -> tuple[list[str | None], list[float | None], list[bool | None]]:
        """The attack model's kind, probability and alarm per flow (None without one)."""
        n = len(flows)
        if self.attack is None or n == 0:
            return [None] * n, [None] * n, [None] * n
        net, model = self.attack.numpy_network(), self.attack
        hidden = self._hidden(net, "attack_parts", own, heads, flows, befores)
        probs = softmax(net.head_out(hidden), model.refiner.temperature)
        score = attack_probability(probs, model.classes)
        kind = attack_kind(probs, model.classes)
        alarm = float(model.alarm or 1.0)
        return (
            [model.classes[int(k)] for k in kind],
            [float(v) for v in score],
            [bool(v >= alarm) for v in score],
        )


def _float_lists(values: npt.NDArray[np.float32]) -> pa.Array:
    """(N, K) floats as a list<float32> column, without a Python list per row."""
    n, k = values.shape if values.ndim == 2 else (0, 0)
    offsets = pa.array(np.arange(0, n * k + 1, max(k, 1))[: n + 1], pa.int32())
    flat = pa.array(np.ascontiguousarray(values, np.float32).reshape(-1), pa.float32())
    return pa.ListArray.from_arrays(offsets, flat, type=pa.list_(pa.float32()))
