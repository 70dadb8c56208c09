"""What the worker's agent does to one micro-batch of raw messages, free of any Kafka I/O.

Keeping the per-message work in plain functions makes the agents thin and lets the
exact accounting (every packet in -> one verdict or one dead letter) be tested
without a broker.

Verdicts are the scored packets and the ARP frames (status ``arp``): an ARP frame is not
scored (the model reads IP packets) but is judged by the alert stage's ARP detectors, so
it travels with the verdicts of its gateway, in order, as a row with label ``arp`` and
decision ``not_scored`` (:data:`amlhp.encoders.reasons.VERDICT_STATUSES`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.facts import packet_facts
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.reasons import ARP, VERDICT_STATUSES
from amlhp.model.decision import DECISIONS, NOT_SCORED, Assessment
from amlhp.streams.deadletter import Origin, dead_message, dead_packets
from amlhp.wire import RAW, BatchDecodeError, from_ipc, verdict_schema

STATUS_OK = "ok"


class BatchScorer(Protocol):
    """What the worker needs of a model: see :mod:`amlhp.model.scorer`."""

    @property
    def version(self) -> str: ...

    @property
    def classes(self) -> list[str]: ...

    def assess(self, header: np.ndarray, payload: np.ndarray) -> Assessment:
        """Class ids, probabilities, malicious score, OOD score and decision for uint8 inputs."""
        ...


@dataclass(frozen=True)
class EncodeResult:
    """What raw packets became: the encoded rows that become verdicts (scored packets and
    ARP frames), and dead letters per origin."""

    encoded: pa.RecordBatch | None
    dead: list[pa.RecordBatch]
    #: per packet of the input: a verdict's row (and so in ``encoded``, in input order)
    ok: np.ndarray


def encode_raw(
    raw: pa.RecordBatch,
    origins: list[Origin],
    config: EncoderConfig,
    stage: str = "encode",
    of_origin: np.ndarray | None = None,
) -> EncodeResult:
    """Encode decoded raw packets in ONE encoder call; the packets it refuses become dead
    letters of ``stage``, each under its own message's origin (``of_origin``: per packet,
    an index into ``origins``; all the first one when omitted). The worker and the
    replay both encode through here."""
    encoded = encode_batch(raw, config)
    statuses = pa.array(sorted(VERDICT_STATUSES))
    ok = pc.is_in(encoded.column("status"), statuses).to_numpy(zero_copy_only=False)
    if of_origin is None:
        of_origin = np.zeros(raw.num_rows, np.int64)
    dead = []
    for i in np.unique(of_origin[~ok]).tolist():
        bad = pa.array(~ok & (of_origin == i))
        rows, data = encoded.filter(bad), raw.column("data").filter(bad)
        dead.append(dead_packets(rows, data, origins[i], stage))
    good = encoded.filter(pa.array(ok)) if ok.any() else None
    return EncodeResult(good, dead, ok)


@dataclass(frozen=True)
class RawMessage:
    """One message of the raw topic, as the worker's agent takes it."""

    value: bytes | None
    origin: Origin
    gateway: str | None = None
    #: when the tap handed the message to Kafka (its header), None when absent
    ingested_at_ns: int | None = None


@dataclass(frozen=True)
class MicroBatch:
    """What one micro-batch of raw messages became: every packet in exactly one of
    ``verdicts`` or ``dead`` (``packets_in`` counts them per message)."""

    verdicts: pa.RecordBatch | None
    dead: list[pa.RecordBatch]
    #: the encoded ok rows, in verdict row order (the sampled explainer reads them)
    encoded: list[pa.RecordBatch]
    packets_in: list[int]
    #: per verdict row: the raw partition its packet came from (where its verdict goes)
    partitions: np.ndarray | None = None


def process_micro_batch(
    messages: list[RawMessage], scorer: BatchScorer, max_batch: int, config: EncoderConfig
) -> MicroBatch:
    """Decode, encode and score a micro-batch of raw messages with ONE model.

    ``config`` is the encoder configuration of that same ``scorer`` (its P and masked
    fields), chosen by the caller in the one place where both are known, so no packet is
    ever scored by a model that was trained on another encoding, also across a hot reload.
    Each verdict keeps its stage times: ingested (the tap's publish), encoded, scored.

    The messages' packets are encoded in one call: a fleet of quiet gateways sends
    messages of one packet each, and the encoder's cost is mostly per call."""
    dead: list[pa.RecordBatch] = []
    raws: list[pa.RecordBatch] = []
    sources: list[int] = []  # the message of each batch in ``raws``
    packets_in: list[int] = []
    for i, msg in enumerate(messages):
        try:
            raw = from_ipc(msg.value or b"", RAW)
        except BatchDecodeError as exc:
            dead.append(dead_message(msg.origin, "encode", str(exc), msg.value, msg.gateway))
            packets_in.append(0)
            continue
        raws.append(raw)
        sources.append(i)
        packets_in.append(raw.num_rows)
    if not sum(packets_in):
        return MicroBatch(None, dead, [], packets_in)
    of_message = np.repeat(sources, [r.num_rows for r in raws])
    origins = [m.origin for m in messages]
    result = encode_raw(pa.concat_batches(raws), origins, config, of_origin=of_message)
    encoded_at = time.time_ns()
    dead.extend(result.dead)
    good = result.encoded
    if good is None:
        return MicroBatch(None, dead, [], packets_in)
    ingested = np.array([m.ingested_at_ns or -1 for m in messages], np.int64)
    timings = (ingested[of_message[result.ok]], np.full(good.num_rows, encoded_at, np.int64))
    verdicts = score_batches([good], scorer, max_batch, timings)
    partitions = np.array([m.origin.partition for m in messages], np.int32)[of_message[result.ok]]
    return MicroBatch(verdicts, dead, [good], packets_in, partitions)


def score_batches(
    batches: list[pa.RecordBatch],
    scorer: BatchScorer,
    max_batch: int,
    timings: tuple[np.ndarray, np.ndarray] | None = None,
) -> pa.RecordBatch:
    """Score encoded rows in chunks of at most ``max_batch`` packets with ONE model.

    The caller passes one scorer reference for the whole micro-batch, so a model swap
    never splits a batch between two versions. ``timings``: per row, when the packet was
    ingested and encoded (ns; -1 where unknown).
    """
    table = pa.Table.from_batches(batches).combine_chunks()
    header, payload, ok = model_inputs(table)
    scored = np.flatnonzero(ok)
    if len(scored) < table.num_rows:  # ARP rows: not through the model
        header, payload = header[scored], payload[scored]
    n = len(scored)
    started = time.perf_counter_ns()
    parts = [
        scorer.assess(header[lo : lo + max_batch], payload[lo : lo + max_batch])
        for lo in range(0, n, max_batch)
    ]
    assessment = Assessment.concat(parts, len(scorer.classes))
    versions = None
    judge_sites = getattr(scorer, "judge_sites", None)  # learnt sites (amlhp model adapt)
    if judge_sites is not None and n:
        gateways = table.column("gateway").to_numpy(zero_copy_only=False)[scored]
        assessment, versions = judge_sites(gateways, header, payload, assessment)
    inference_ns = time.perf_counter_ns() - started
    verdicts = build_verdicts(table, assessment, scorer, inference_ns, scored, versions)
    if timings is not None:
        for name, values in zip(("ingested_at_ns", "encoded_at_ns"), timings, strict=True):
            column = pa.array(values, pa.int64(), mask=values < 0)
            verdicts = verdicts.set_column(verdicts.schema.get_field_index(name), name, column)
    return verdicts


def build_verdicts(
    table: pa.Table,
    assessment: Assessment,
    scorer: BatchScorer,
    inference_ns: int,
    scored: np.ndarray | None = None,
    versions: np.ndarray | None = None,
) -> pa.RecordBatch:
    """Encoded rows + the model's assessment of the rows ``scored`` (all when None) -> one
    verdict batch in the verdict schema; the other rows (ARP frames) are not scored.
    ``versions``: per scored row, what judged it (a site profile's version where one did;
    the scorer's version otherwise)."""
    n = table.num_rows
    rows = np.arange(n) if scored is None else scored
    unscored = np.ones(n, np.bool_)
    unscored[rows] = False
    schema = verdict_schema()
    k = len(scorer.classes)

    def spread(values: np.ndarray, dtype: Any) -> np.ndarray:
        out = np.zeros((n, *values.shape[1:]), dtype)
        out[rows] = values
        return out

    class_ids = spread(assessment.class_ids, np.int64)
    probs = spread(assessment.probs.reshape(len(rows), k), np.float32)
    labels = np.asarray([*scorer.classes, ARP], dtype=object)[np.where(unscored, k, class_ids)]
    top = probs[np.arange(n), class_ids] if n else np.array([], np.float32)
    decisions = np.asarray([*DECISIONS, NOT_SCORED], dtype=object)
    decision = decisions[np.where(unscored, len(DECISIONS), spread(assessment.decision, np.int64))]
    now = time.time_ns()
    columns: dict[str, pa.Array] = {}
    for name in schema.names:
        if name in table.column_names and name not in ("header", "payload"):
            columns[name] = table.column(name).combine_chunks()
    columns["label"] = pa.array(labels, pa.string())
    columns["class_id"] = pa.array(class_ids, pa.int16(), mask=unscored)
    columns["score"] = pa.array(top.astype(np.float32), pa.float32(), mask=unscored)
    flat = pa.array(probs.reshape(-1).astype(np.float32), pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32), pa.int32())
    columns["probs"] = pa.ListArray.from_arrays(
        offsets, flat, mask=pa.array(unscored) if unscored.any() else None
    )
    for name, values in (
        ("malicious_score", assessment.malicious_score),
        ("ood_score", assessment.ood_score),
    ):
        columns[name] = pa.array(
            spread(np.asarray(values), np.float32), pa.float32(), mask=unscored
        )
    columns["decision"] = pa.array(decision, pa.string())
    columns.update(packet_facts(table))
    model_version = np.full(n, scorer.version, dtype=object)
    if versions is not None:
        model_version[rows] = versions
    columns["model_version"] = pa.array(model_version, pa.string())
    columns["scored_at_ns"] = pa.array(np.full(n, now, np.int64), pa.int64())
    per_packet = inference_ns // max(1, len(rows))
    columns["inference_ns"] = pa.array(np.full(n, per_packet, np.int64), pa.int64(), mask=unscored)
    arrays = []
    for field in schema:
        if field.name in columns:
            arrays.append(columns[field.name].cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def split_by_partition(
    batch: pa.RecordBatch, partitions: np.ndarray
) -> list[tuple[int, pa.RecordBatch]]:
    """Verdicts go to the partition of the verdict topic with the number of the raw
    partition their packets came from: the tap keys raw messages by gateway, so each
    gateway's verdicts stay on one partition, in order, and a micro-batch of a fleet's
    quiet gateways leaves as one message per partition instead of one per gateway."""
    return [
        (int(p), batch.filter(pa.array(partitions == p))) for p in np.unique(partitions).tolist()
    ]


def row_chunks(batch: pa.RecordBatch, max_rows: int) -> list[pa.RecordBatch]:
    """Split a batch into zero-copy slices of at most ``max_rows`` rows (one per message)."""
    if batch.num_rows <= max_rows:
        return [batch]
    return [batch.slice(lo, max_rows) for lo in range(0, batch.num_rows, max_rows)]
