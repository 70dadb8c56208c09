"""The scorer: shapes, backends agreeing, non-ok rows, and refusing foreign records."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.model.artifact import Artifact
from amlhp.model.dataset import LabelledPackets
from amlhp.model.decision import (
    UNCALIBRATED,
    UNCERTAIN,
    DecisionPolicy,
    benign_mask,
    energy,
    log_odds,
)
from amlhp.model.exceptions import ScoringError
from amlhp.model.scorer import Scorer
from tests.support import synth

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_backends_agree_on_real_packets(
    tiny_artifact: Artifact, synthetic_data: LabelledPackets
) -> None:
    header, payload = synthetic_data.header, synthetic_data.payload[:, :64]
    results = {}
    for backend in ("torch", "fast", "onnx", "numpy", "native"):
        scorer = Scorer(tiny_artifact, backend=backend, device="cpu", chunk=97)
        ids, probs = scorer.predict(header, payload)
        assert ids.shape == (800,)
        assert probs.shape == (800, 4)
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
        results[backend] = ids
    assert np.array_equal(results["torch"], results["fast"])
    assert np.array_equal(results["torch"], results["onnx"])
    assert np.array_equal(results["torch"], results["numpy"])
    assert np.array_equal(results["torch"], results["native"])
    accuracy = float(np.mean(results["fast"] == synthetic_data.labels))
    assert accuracy > 0.9


def test_score_batch_skips_non_ok_rows(tiny_artifact: Artifact) -> None:
    frames = [
        (1, synth.ethernet(synth.ipv4(synth.tcp(b"\x10\x0c\x00\x04MQTT"), 6))),
        (1, synth.ethernet(b"\x60" + bytes(50), ethertype=0x86DD)),  # IPv6: not encoded
        (1, synth.ethernet(synth.ipv4(synth.udp(b"x" * 40, sport=53), 17))),
    ]
    batch = encode_batch(synth.raw_batch(frames), EncoderConfig())
    scores = Scorer(tiny_artifact, device="cpu").score_batch(batch)
    assert scores.ok.tolist() == [True, False, True]
    assert scores.class_ids[1] == -1
    assert np.isnan(scores.scores[1])
    assert np.all((scores.scores[[0, 2]] > 0) & (scores.scores[[0, 2]] <= 1))
    assert scores.inference_ns > 0


def test_refuses_other_encodings(tiny_artifact: Artifact) -> None:
    scorer = Scorer(tiny_artifact, device="cpu")
    frames = [(1, synth.ethernet(synth.ipv4(synth.tcp(b"x"), 6)))]
    with pytest.raises(ScoringError, match="P=64"):
        scorer.score_batch(encode_batch(synth.raw_batch(frames), EncoderConfig(payload_bytes=16)))
    with pytest.raises(ScoringError, match="mask"):
        scorer.score_batch(
            encode_batch(synth.raw_batch(frames), EncoderConfig(mask_fields=("ports",)))
        )
    with pytest.raises(ScoringError, match="header"):
        scorer.predict(np.zeros((2, 100), np.uint8), np.zeros((2, 64), np.uint8))


def test_empty_batch_and_bad_options(tiny_artifact: Artifact) -> None:
    scorer = Scorer(tiny_artifact, device="cpu")
    ids, probs = scorer.predict(np.zeros((0, 128), np.uint8), np.zeros((0, 64), np.uint8))
    assert ids.shape == (0,)
    assert probs.shape == (0, 4)
    empty = encode_batch(synth.raw_batch([]), EncoderConfig())
    assert isinstance(empty, pa.RecordBatch)
    assert scorer.score_batch(empty).class_ids.shape == (0,)
    with pytest.raises(ScoringError, match="backend"):
        Scorer(tiny_artifact, backend="tpu")
    with pytest.raises(ScoringError, match="device"):
        Scorer(tiny_artifact, device="gpu9")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(tiny_artifact: Artifact, synthetic_data: LabelledPackets) -> None:
    header, payload = synthetic_data.header, synthetic_data.payload[:, :64]
    cpu_ids, cpu_probs = Scorer(tiny_artifact, device="cpu").predict(header, payload)
    gpu_ids, _ = Scorer(tiny_artifact, device="cuda").predict(header, payload)
    assert np.array_equal(cpu_ids, gpu_ids)
    # the pipelined path: fixed batches of 300 (the last one padded), two slots in turn
    fast = Scorer(tiny_artifact, backend="fast", device="cuda", chunk=300)
    fast_ids, fast_probs = fast.predict(header, payload)
    assert np.array_equal(cpu_ids, fast_ids)
    assert float(np.abs(fast_probs - cpu_probs).max()) < 1e-4


def _with_benign_and_policy(artifact: Artifact, policy: DecisionPolicy) -> Artifact:
    """The tiny model with its first class called benign and a decision block."""
    meta = copy.deepcopy(artifact.meta)
    meta["classes"] = ["benign", *meta["classes"][1:]]
    meta["decision"] = policy.to_meta()
    return dataclasses.replace(artifact, meta=meta)


def test_score_batch_applies_the_artifacts_decision_policy(tiny_artifact: Artifact) -> None:
    frames = [
        (1, synth.ethernet(synth.ipv4(synth.tcp(b"\x10\x0c\x00\x04MQTT", dport=1883), 6))),
        (1, synth.ethernet(b"\x60" + bytes(50), ethertype=0x86DD)),  # not encoded
        (1, synth.ethernet(synth.ipv4(synth.tcp(flags=0x02), 6))),
        (1, synth.ethernet(synth.ipv4(synth.udp(b"x" * 40, sport=53), 17))),
    ]
    batch = encode_batch(synth.raw_batch(frames), EncoderConfig())
    policy = DecisionPolicy(platt_a=0.5, platt_b=-0.25, benign_below=0.2, malicious_at=0.8)
    scorer = Scorer(_with_benign_and_policy(tiny_artifact, policy), device="cpu")
    assert scorer.policy == policy
    scores = scorer.score_batch(batch)
    assert scores.decision[1] == -1
    assert np.isnan(scores.malicious_score[1])
    assert np.isnan(scores.ood_score[1])
    ok = np.flatnonzero(scores.ok)
    header, payload, _ = model_inputs(batch)
    logits = scorer.logits(header[ok], payload[ok])
    z = log_odds(logits, benign_mask(scorer.classes))
    assert np.allclose(scores.malicious_score[ok], policy.score(z), atol=1e-5)
    assert np.allclose(scores.ood_score[ok], energy(logits), atol=1e-4)
    assert scores.decision[ok].tolist() == policy.decide(policy.score(z), energy(logits)).tolist()
    # everything is out of distribution below an impossible energy cut: all uncertain
    strict = dataclasses.replace(policy, energy_max=-1e9)
    unsure = Scorer(_with_benign_and_policy(tiny_artifact, strict), device="cpu")
    assert set(unsure.score_batch(batch).decision[ok].tolist()) == {UNCERTAIN}
    assert Scorer(tiny_artifact, device="cpu").policy is UNCALIBRATED
