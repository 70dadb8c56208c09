"""Sampled per-packet explanations of streaming verdicts (``amlhp worker --explain-every N``).

Shapley value sampling over 26 players costs 27 forward passes per permutation and packet
(about 3 s on one core with 16 permutations, docs/flows.md), a million times the cost of
scoring the packet, so only a sample of the verdicts is explained, and never on the
scoring path:

* **Which packets:** those whose tap sequence number is a multiple of ``every``. The tap
  numbers each gateway's packets consecutively, so that is every Nth packet of every
  gateway, and the choice depends on the packet alone: the same packets are picked
  whatever the micro-batching, the partition assignment, the number of workers or a
  re-delivery after a crash (a re-delivered packet is explained again: at least once).
* **How many:** a token bucket caps explanations at ``max_per_s`` (burst of the same
  size); a picked packet beyond the cap is dropped and counted (``rate_limited``).
* **Where:** one daemon thread with a bounded queue of packets, so the event loop (Kafka
  heartbeats) and the scoring thread never wait for Captum. When the queue is full the
  packet is dropped and counted (``queue_full``). The daemon thread dies with the worker:
  explanations are extra, never part of the "every packet accounted for" guarantee.
* **With which model:** the plain torch module of the very scorer reference that scored
  the micro-batch (:attr:`amlhp.model.scorer.Scorer.artifact`), and the verdict's own
  class as the target, so a hot reload or a re-parameterised scorer cannot make an
  explanation disagree with its verdict.

Counts go to ``amlhp_explanations_total{step="score", outcome=...}`` and the time per
explanation to ``amlhp_explanation_seconds``. Records go to the explanation topic
(``AMLHP_TOPIC_EXPLANATIONS``), keyed by gateway, one Kafka message per packet, in the
versioned Arrow schema ``amlhp.explanation`` v1 (columns: :func:`amlhp.wire.explanation_schema`;
read back with ``amlhp.wire.from_ipc(value, amlhp.wire.EXPLANATION)``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from amlhp.errors import AmlhpError
from amlhp.metrics.definitions import PipelineMetrics
from amlhp.model.artifact import Artifact, load_artifact
from amlhp.streams.exceptions import ExplainError
from amlhp.streams.processing import BatchScorer
from amlhp.wire import attribution_fields, explanation_schema, to_ipc

log = logging.getLogger(__name__)

#: Sends one record: (key, value) -> coroutine that completes once Kafka has it.
Send = Callable[[bytes, bytes], Awaitable[Any]]


def field_names() -> list[str]:
    """The players of :func:`amlhp.model.packet_explain.explain_packets`, in order."""
    from amlhp.model.packet_explain import FIELD_NAMES  # imports torch: only when needed

    return list(FIELD_NAMES)


@dataclass(frozen=True)
class ExplainConfig:
    """``amlhp worker --explain-every N --explain-max-per-s R --explain-queue Q
    --explain-samples S``."""

    every: int
    max_per_s: float = 1.0
    queue_size: int = 16
    samples: int = 8

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ExplainError(f"explain every must be >= 1 (0 turns it off), got {self.every}")
        if self.max_per_s <= 0:
            raise ExplainError(f"explanations per second must be > 0, got {self.max_per_s}")
        if self.queue_size < 1 or self.samples < 1:
            raise ExplainError("the explanation queue and the samples must be >= 1")


class ExplainSampler:
    """Picks packets by sequence number, then caps them with a token bucket.

    ``clock`` is injectable so that the cap can be tested without sleeping.
    """

    def __init__(
        self, every: int, max_per_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every = every
        self.rate = max_per_s
        self.burst = max(1.0, max_per_s)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def picked(self, seqs: np.ndarray) -> np.ndarray:
        """Indices of the rows whose ``seq`` is a multiple of ``every`` (no cap)."""
        return np.flatnonzero(np.asarray(seqs, dtype=np.uint64) % np.uint64(self.every) == 0)

    def select(self, seqs: np.ndarray) -> tuple[np.ndarray, int]:
        """(indices to explain, number of picked rows dropped by the cap)."""
        picked = self.picked(seqs)
        if picked.size == 0:
            return picked, 0
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        take = min(picked.size, int(self._tokens))
        self._tokens -= take
        return picked[:take], int(picked.size - take)


@dataclass(frozen=True)
class ExplainJob:
    """One picked packet with what explaining it needs, detached from Arrow buffers."""

    gateway: str
    seq: int
    ts_ns: int
    label: str
    class_id: int
    score: float
    header: np.ndarray
    payload: np.ndarray
    scorer: BatchScorer
    loop: asyncio.AbstractEventLoop


def masked_fields(scorer: BatchScorer) -> tuple[str, ...]:
    """The header fields the scorer's encoder zeroes: not players of an explanation."""
    config = getattr(scorer, "encoder_config", None)
    return tuple(getattr(config, "mask_fields", ()))


def explain_module(scorer: BatchScorer) -> Any:
    """The plain torch module behind a scorer, taking (header, payload) byte tensors.

    The fast scorer serves a re-parameterised copy and the native and numpy ones serve
    from the arrays alone; Captum needs the trained module (same function, same version),
    which the artifact keeps or, when it was loaded without torch, is built once from the
    same verified files.
    """
    artifact = getattr(scorer, "artifact", None)
    model = getattr(artifact, "module", None)
    if model is None and isinstance(artifact, Artifact):
        model = _trained_module(artifact.json_path, str(artifact.meta.get("sha256")))
    from torch import nn

    if not isinstance(model, nn.Module):
        raise ExplainError(f"scorer {type(scorer).__name__} exposes no torch module to explain")
    kind = str(getattr(scorer, "input_kind", "header_payload"))
    if kind != "header_payload":
        raise ExplainError(f"model input {kind!r} has no header fields to explain")
    return model


@functools.lru_cache(maxsize=2)
def _trained_module(json_path: Path, sha256: str) -> Any:
    """The torch module of an artifact (by path and weights digest: a reload is new)."""
    return load_artifact(json_path).model


class PacketExplainer:
    """The worker's explanation side: :meth:`offer` on the event loop after each scored
    micro-batch, explanation and publication in its own daemon thread."""

    def __init__(self, config: ExplainConfig, metrics: PipelineMetrics, send: Send) -> None:
        self.config = config
        self.metrics = metrics
        self.sampler = ExplainSampler(config.every, config.max_per_s)
        self._send = send
        self._queue: queue.Queue[ExplainJob | None] = queue.Queue(maxsize=config.queue_size)
        self._fields = field_names()
        self._schema = explanation_schema(self._fields)
        self._failures_logged = 0
        metrics.init_explanations()
        self._thread = threading.Thread(target=self._run, name="amlhp-explain", daemon=True)
        self._thread.start()

    # -- on the event loop ---------------------------------------------------------------
    def offer(
        self,
        encoded: Sequence[pa.RecordBatch],
        verdicts: pa.RecordBatch,
        scorer: BatchScorer,
        loop: asyncio.AbstractEventLoop,
    ) -> int:
        """Queue the picked packets of one scored micro-batch; returns how many queued.

        ``verdicts`` must be ``score_batches(encoded, scorer, ...)``: row i of the
        verdicts is row i of the concatenated encoded batches (checked on ``seq``).
        """
        seqs = verdicts.column("seq").to_numpy(zero_copy_only=False)
        idx, limited = self.sampler.select(seqs)
        scored = verdicts.column("score").is_valid().to_numpy(zero_copy_only=False)
        idx = idx[scored[idx]]  # an ARP frame's row is not scored: nothing to explain
        self.metrics.count_explanations("rate_limited", limited)
        if idx.size == 0:
            return 0
        try:
            picked, header, payload = _picked_rows(encoded, verdicts, idx)
        except (AmlhpError, pa.ArrowException, ValueError, KeyError, IndexError) as exc:
            # never let an explanation problem reach the worker's agent: count it and go on
            self._failed(idx.size, exc)
            return 0
        queued = 0
        for j in range(idx.size):
            job = ExplainJob(
                gateway=str(picked.column("gateway")[j].as_py()),
                seq=int(picked.column("seq")[j].as_py()),
                ts_ns=int(picked.column("ts_ns")[j].as_py()),
                label=str(picked.column("label")[j].as_py()),
                class_id=int(picked.column("class_id")[j].as_py()),
                score=float(picked.column("score")[j].as_py()),
                header=np.array(header[j : j + 1]),
                payload=np.array(payload[j : j + 1]),
                scorer=scorer,
                loop=loop,
            )
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                self.metrics.count_explanations("queue_full", idx.size - j)
                break
            queued += 1
        return queued

    def close(self) -> None:
        """Let the thread finish the packet in hand and stop (queued ones are dropped)."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)

    # -- in the explanation thread -------------------------------------------------------
    def explain(self, job: ExplainJob) -> pa.RecordBatch:
        """The one-row explanation record of a job (runs Captum)."""
        from amlhp.model.packet_explain import explain_packets

        started = time.perf_counter_ns()
        attr, _ = explain_packets(
            explain_module(job.scorer),
            job.header,
            job.payload,
            samples=self.config.samples,
            seed=job.seq % (1 << 31),
            targets=np.array([job.class_id]),
            masked_fields=masked_fields(job.scorer),
        )
        took = time.perf_counter_ns() - started
        return build_record(job, attr[0], self.config.samples, took, self._schema)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                record = self.explain(job)
                value = to_ipc(record)
            except Exception as exc:  # noqa: BLE001 - a bad sample must not kill the thread
                self._failed(1, exc)
                continue
            self.metrics.explain_seconds.observe(record.column("explain_ns")[0].as_py() / 1e9)
            try:
                future = asyncio.run_coroutine_threadsafe(
                    _await_send(self._send, job.gateway.encode(), value), job.loop
                )
            except RuntimeError as exc:  # the event loop is closed: the worker is stopping
                self._failed(1, exc)
                continue
            future.add_done_callback(self._sent)

    def _sent(self, future: Future[Any]) -> None:
        exc = future.exception() if not future.cancelled() else None
        if future.cancelled() or exc is not None:
            self._failed(1, exc or ExplainError("explanation send cancelled"))
        else:
            self.metrics.count_explanations("emitted")

    def _failed(self, n: int, exc: BaseException) -> None:
        self.metrics.count_explanations("failed", n)
        if self._failures_logged < 10:  # a broken model would otherwise log every sample
            self._failures_logged += 1
            log.warning("packet explanation failed: %s: %s", type(exc).__name__, exc)


def _picked_rows(
    encoded: Sequence[pa.RecordBatch], verdicts: pa.RecordBatch, idx: np.ndarray
) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """The picked verdict rows and copies of their header and payload bytes."""
    from amlhp.encoders.arrays import model_inputs

    take = pa.array(idx)
    rows = pa.Table.from_batches(list(encoded)).take(take).combine_chunks()
    picked = verdicts.take(take)
    if rows.column("seq").to_pylist() != picked.column("seq").to_pylist():
        raise ExplainError("encoded rows and verdicts are not aligned")
    header, payload, _ = model_inputs(rows)
    return picked, np.array(header), np.array(payload)


async def _await_send(send: Send, key: bytes, value: bytes) -> None:
    """Hand the record to the producer and wait for Kafka's acknowledgement."""
    pending = await send(key, value)
    if isinstance(pending, Awaitable):
        await pending


def build_record(
    job: ExplainJob, attributions: np.ndarray, samples: int, explain_ns: int, schema: pa.Schema
) -> pa.RecordBatch:
    """One explanation row in ``schema`` (``amlhp.explanation`` v1)."""
    values = np.asarray(attributions, dtype=np.float32)
    if values.shape != (len(attribution_fields(schema)),):
        raise ExplainError(f"{values.shape[0]} attributions for {schema.metadata[b'fields']!r}")
    columns = {
        "gateway": [job.gateway],
        "seq": [job.seq],
        "ts_ns": [job.ts_ns],
        "model_version": [str(job.scorer.version)],
        "label": [job.label],
        "class_id": [job.class_id],
        "score": [job.score],
        "attributions": [values.tolist()],
        "samples": [samples],
        "explained_at_ns": [time.time_ns()],
        "explain_ns": [explain_ns],
    }
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def faust_explainer(
    app: Any, topic: str, config: ExplainConfig, metrics: PipelineMetrics
) -> PacketExplainer:
    """A :class:`PacketExplainer` publishing to ``topic`` through the Faust app's producer
    (the worker's one Kafka client, with its credentials and delivery settings)."""
    channel = app.topic(topic, value_serializer="raw", key_serializer="raw")

    def send(key: bytes, value: bytes) -> Awaitable[Any]:
        return channel.send(key=key, value=value)

    return PacketExplainer(config, metrics, send)
