"""Sampled explanations of streaming verdicts: sampler, cap, drops, record schema, model."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch
from prometheus_client import CollectorRegistry

from amlhp.data import DEMO_CAPTURE
from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.capture import encode_captures
from amlhp.metrics.definitions import PipelineMetrics
from amlhp.model.packet_explain import FIELD_NAMES, explain_packets
from amlhp.model.scorer import Scorer, default_model_path, load_scorer
from amlhp.streams.exceptions import ExplainError
from amlhp.streams.explain_sample import (
    ExplainConfig,
    ExplainJob,
    ExplainSampler,
    PacketExplainer,
    build_record,
    explain_module,
)
from amlhp.streams.processing import score_batches
from amlhp.wire import (
    EXPLANATION,
    EXPLANATION_VERSION,
    BatchDecodeError,
    attribution_fields,
    explanation_schema,
    from_ipc,
    to_ipc,
    verdict_schema,
)
from tests.support.clock import ManualClock

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return load_scorer(default_model_path())


@pytest.fixture(scope="module")
def encoded() -> list[pa.RecordBatch]:
    """60 encodable packets of the demo capture as two encoded batches (one micro-batch)."""
    table = encode_captures([DEMO_CAPTURE]).slice(0, 400)
    ok = table.filter(pc.equal(table.column("status"), "ok")).slice(0, 60).combine_chunks()
    assert ok.num_rows == 60
    return [ok.slice(0, 25).to_batches()[0], ok.slice(25).to_batches()[0]]


def value(metrics: PipelineMetrics, outcome: str) -> float:
    got = metrics.registry.get_sample_value(
        "amlhp_explanations_total", {"step": "score", "outcome": outcome}
    )
    return 0.0 if got is None else got


async def counted(metrics: PipelineMetrics, outcome: str, n: int, timeout_s: float = 30.0) -> None:
    """Wait (on the event loop) until ``n`` explanations have had ``outcome``."""
    for _ in range(int(timeout_s / 0.05)):
        if value(metrics, outcome) >= n:
            return
        await asyncio.sleep(0.05)


# -- sampler ----------------------------------------------------------------------------
def test_sampler_picks_by_seq_whatever_the_batching() -> None:
    seqs = np.arange(1000, dtype=np.uint64)
    sampler = ExplainSampler(every=7, max_per_s=1e9)
    whole = seqs[sampler.picked(seqs)]
    assert whole.tolist() == list(range(0, 1000, 7))
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(seqs)
    cuts = np.sort(rng.choice(np.arange(1, 1000), 9, replace=False))
    parts = [p[sampler.select(p)[0]] for p in np.split(shuffled, cuts)]
    assert sorted(np.concatenate(parts).tolist()) == whole.tolist()
    assert ExplainSampler(every=1, max_per_s=1e9).picked(seqs).size == 1000


def test_sampler_cap_is_a_token_bucket() -> None:
    clock = ManualClock()
    sampler = ExplainSampler(every=1, max_per_s=2.0, clock=clock)
    idx, dropped = sampler.select(np.arange(5, dtype=np.uint64))
    assert (idx.tolist(), dropped) == ([0, 1], 3)  # burst of 2
    assert sampler.select(np.arange(5, dtype=np.uint64))[1] == 5  # no time passed
    clock.now += 0.5  # one token
    idx, dropped = sampler.select(np.array([10, 11, 12], np.uint64))
    assert (idx.tolist(), dropped) == ([0], 2)
    clock.now += 3600  # tokens never exceed the burst
    assert sampler.select(np.arange(10, dtype=np.uint64))[1] == 8
    sparse = ExplainSampler(every=10, max_per_s=1.0, clock=clock)
    for _ in range(5):  # batches without a picked packet take no token
        idx, dropped = sparse.select(np.array([1, 3, 5], np.uint64))
        assert (idx.tolist(), dropped) == ([], 0)
    assert sparse.select(np.array([10, 20], np.uint64))[0].tolist() == [0]


def test_config_refuses_what_would_never_or_always_explain() -> None:
    for bad in (
        {"every": 0},
        {"every": 5, "max_per_s": 0.0},
        {"every": 5, "queue_size": 0},
        {"every": 5, "samples": 0},
    ):
        with pytest.raises(ExplainError):
            ExplainConfig(**bad)


# -- record schema ----------------------------------------------------------------------
def job(scorer: Scorer, seq: int = 42) -> ExplainJob:
    return ExplainJob(
        gateway="gw-1",
        seq=seq,
        ts_ns=1_700_000_000_000_000_000,
        label=scorer.classes[1],
        class_id=1,
        score=0.75,
        header=np.zeros((1, 128), np.uint8),
        payload=np.zeros((1, 64), np.uint8),
        scorer=scorer,
        loop=asyncio.new_event_loop(),
    )


def test_record_schema_is_named_versioned_and_names_its_fields(scorer: Scorer) -> None:
    schema = explanation_schema(FIELD_NAMES)
    meta = schema.metadata
    assert meta[b"schema"] == EXPLANATION.encode()
    assert meta[b"version"] == b"1"
    assert EXPLANATION_VERSION == "1"
    assert attribution_fields(schema) == FIELD_NAMES
    assert {"ip.ttl", "tcp.flags", "tcp.dport", "payload"} <= set(FIELD_NAMES)
    attr = np.linspace(-1, 1, len(FIELD_NAMES)).astype(np.float32)
    record = build_record(job(scorer), attr, 4, 1234, schema)
    back = from_ipc(to_ipc(record), EXPLANATION)
    row = back.to_pylist()[0]
    assert (row["gateway"], row["seq"], row["label"], row["class_id"]) == (
        "gw-1",
        42,
        scorer.classes[1],
        1,
    )
    assert row["model_version"] == scorer.version
    assert row["samples"] == 4
    assert np.array_equal(np.array(row["attributions"], np.float32), attr)
    with pytest.raises(ExplainError):
        build_record(job(scorer), attr[:-1], 4, 1, schema)


def test_decode_refuses_other_batches_and_garbage(scorer: Scorer) -> None:
    with pytest.raises(BatchDecodeError):
        from_ipc(to_ipc(pa.RecordBatch.from_pylist([], schema=verdict_schema())), EXPLANATION)
    with pytest.raises(BatchDecodeError):
        from_ipc(b"not arrow at all", EXPLANATION)
    attr = np.zeros(3, np.float32)
    short = build_record(job(scorer), attr, 1, 1, explanation_schema(["a", "b", "c"]))
    lying = short.replace_schema_metadata({**short.schema.metadata, b"fields": b"a,b"})
    with pytest.raises(BatchDecodeError):
        from_ipc(to_ipc(lying), EXPLANATION)
    newer = short.replace_schema_metadata({**short.schema.metadata, b"version": b"2"})
    with pytest.raises(BatchDecodeError):
        from_ipc(to_ipc(newer), EXPLANATION)


def test_explain_module_is_the_plain_torch_model_of_the_scorer(scorer: Scorer) -> None:
    assert scorer.backend == "native"  # serves from the arrays alone ...
    assert scorer.artifact.module is None
    module = explain_module(scorer)  # ... and explains the trained module of the same files
    assert explain_module(scorer) is module  # built once
    fast = load_scorer(default_model_path(), backend="fast", device="cpu")
    assert explain_module(fast) is fast.artifact.model
    assert module.state_dict().keys() == fast.artifact.model.state_dict().keys()
    assert all(torch.equal(v, fast.artifact.model.state_dict()[k])
               for k, v in module.state_dict().items())  # fmt: skip

    class NoModule:
        version = "x"
        classes: ClassVar[list[str]] = ["a"]

        def assess(self, header: np.ndarray, payload: np.ndarray) -> Any:
            raise AssertionError

    with pytest.raises(ExplainError):
        explain_module(NoModule())


# -- the explainer: thread, queue, drops, alignment with the verdicts -------------------
class GatedExplainer(PacketExplainer):
    """Holds every explanation until the test opens the gate, to fill the queue."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        self.started = threading.Event()
        self.gate = threading.Event()
        super().__init__(*args, **kw)

    def explain(self, job: ExplainJob) -> pa.RecordBatch:
        self.started.set()
        assert self.gate.wait(30)
        return super().explain(job)


def run_explainer(
    explainer: PacketExplainer,
    offers: list[tuple[list[pa.RecordBatch], pa.RecordBatch]],
    scorer: Scorer,
    sent: list[tuple[bytes, bytes]],
    expect: int,
) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        for batches, verdicts in offers:
            explainer.offer(batches, verdicts, scorer, loop)
        for _ in range(600):
            if len(sent) >= expect and value(explainer.metrics, "emitted") >= expect:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(sent)} explanations sent, {expect} expected")

    asyncio.run(main())


def sender(sent: list[tuple[bytes, bytes]]) -> Any:
    async def send(key: bytes, value: bytes) -> None:
        sent.append((key, value))

    return send


def test_explanations_match_their_verdicts(scorer: Scorer, encoded: list[pa.RecordBatch]) -> None:
    verdicts = score_batches(encoded, scorer, 1024)
    metrics = PipelineMetrics(CollectorRegistry())
    sent: list[tuple[bytes, bytes]] = []
    config = ExplainConfig(every=10, max_per_s=1000, queue_size=64, samples=2)
    explainer = PacketExplainer(config, metrics, sender(sent))
    seqs = verdicts.column("seq").to_numpy()
    want = sorted(int(s) for s in seqs if s % 10 == 0)
    assert want, "the slice holds no multiple of 10"
    run_explainer(explainer, [(encoded, verdicts)], scorer, sent, len(want))
    explainer.close()
    records = pa.Table.from_batches([from_ipc(v, EXPLANATION) for _, v in sent])
    assert sorted(records.column("seq").to_pylist()) == want
    assert {k for k, _ in sent} == {b"offline"}  # keyed by gateway
    by_seq = {r["seq"]: r for r in verdicts.to_pylist()}
    table = pa.Table.from_batches(encoded)
    header, payload, _ = model_inputs(table.combine_chunks())
    position = {int(s): i for i, s in enumerate(table.column("seq").to_pylist())}
    for row in records.to_pylist():
        verdict = by_seq[row["seq"]]
        assert row["label"] == verdict["label"]
        assert row["class_id"] == verdict["class_id"]
        assert row["score"] == pytest.approx(verdict["score"])
        assert row["model_version"] == verdict["model_version"] == scorer.version
        attr = np.array(row["attributions"], np.float32)
        assert attr.shape == (len(FIELD_NAMES),)
        assert np.isfinite(attr).all()
        assert np.abs(attr).sum() > 0
        i = position[row["seq"]]
        again, _ = explain_packets(
            explain_module(scorer),
            header[i : i + 1],
            payload[i : i + 1],
            samples=2,
            seed=row["seq"],
            targets=np.array([verdict["class_id"]]),
            masked_fields=scorer.encoder_config.mask_fields,
        )
        np.testing.assert_allclose(attr, again[0], rtol=1e-5, atol=1e-6)
        for name in scorer.encoder_config.mask_fields:  # zeroed by the encoder: no player
            assert attr[FIELD_NAMES.index(name)] == 0.0
    assert value(metrics, "emitted") == len(want)
    for outcome in ("rate_limited", "queue_full", "failed"):
        assert value(metrics, outcome) == 0


def test_full_queue_drops_and_counts_never_blocks(
    scorer: Scorer, encoded: list[pa.RecordBatch]
) -> None:
    verdicts = score_batches(encoded, scorer, 1024)
    first = verdicts.slice(0, 1)
    metrics = PipelineMetrics(CollectorRegistry())
    sent: list[tuple[bytes, bytes]] = []
    config = ExplainConfig(every=1, max_per_s=1000, queue_size=2, samples=1)
    explainer = GatedExplainer(config, metrics, sender(sent))
    rest = verdicts.slice(1, 5)
    rest_encoded = [pa.Table.from_batches(encoded).slice(1, 5).combine_chunks().to_batches()[0]]

    def fill() -> None:
        assert explainer.started.wait(30)  # the thread holds packet 1; the queue is empty

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert explainer.offer([encoded[0].slice(0, 1)], first, scorer, loop) == 1
        await loop.run_in_executor(None, fill)
        queued = explainer.offer(rest_encoded, rest, scorer, loop)  # returns at once
        assert queued == 2
        assert value(metrics, "queue_full") == 3
        explainer.gate.set()
        await counted(metrics, "emitted", 3)

    asyncio.run(main())
    explainer.close()
    assert value(metrics, "emitted") == 3
    assert len(sent) == 3
    assert value(metrics, "failed") == 0


def test_rate_cap_and_failures_are_counted(scorer: Scorer, encoded: list[pa.RecordBatch]) -> None:
    verdicts = score_batches(encoded, scorer, 1024)
    metrics = PipelineMetrics(CollectorRegistry())
    sent: list[tuple[bytes, bytes]] = []

    async def refuse(key: bytes, value: bytes) -> None:
        raise RuntimeError("broker says no")

    config = ExplainConfig(every=1, max_per_s=3.0, queue_size=64, samples=1)
    explainer = PacketExplainer(config, metrics, refuse)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert explainer.offer(encoded, verdicts, scorer, loop) == 3  # burst of 3
        await counted(metrics, "failed", 3)

    asyncio.run(main())
    explainer.close()
    assert value(metrics, "rate_limited") == verdicts.num_rows - 3
    assert value(metrics, "failed") == 3
    assert value(metrics, "emitted") == 0
    assert not sent


def test_misaligned_rows_are_counted_never_raised(
    scorer: Scorer, encoded: list[pa.RecordBatch]
) -> None:
    verdicts = score_batches(encoded, scorer, 1024)
    metrics = PipelineMetrics(CollectorRegistry())
    config = ExplainConfig(every=1, max_per_s=1000, queue_size=64, samples=1)
    explainer = PacketExplainer(config, metrics, sender([]))
    loop = asyncio.new_event_loop()
    try:
        assert explainer.offer(encoded[::-1], verdicts, scorer, loop) == 0  # wrong order
    finally:
        loop.close()
        explainer.close()
    assert value(metrics, "failed") == verdicts.num_rows
    assert value(metrics, "emitted") == 0
