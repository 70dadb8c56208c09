"""The committed default model: verified, within budget, and sensible on the public data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch

from amlhp.encoders.capture import encode_captures
from amlhp.model.artifact import artifact_paths, load_artifact
from amlhp.model.decision import DecisionPolicy
from amlhp.model.scorer import default_model_path, load_scorer


def test_default_artifact_is_verified_and_small() -> None:
    json_path, weights = artifact_paths(default_model_path())
    assert json_path.is_file()
    assert weights.stat().st_size < 1_000_000
    art = load_artifact(default_model_path())
    meta = art.meta
    assert meta["architecture"] == "amlhp"
    assert sum(p.numel() for p in art.model.parameters()) == meta["params"] <= 25_000
    assert len(meta["classes"]) == len(set(meta["classes"])) == 30  # lab + public classes
    assert meta["payload_bytes"] == 64
    # The masking the cross-network study chose (docs/model.md): addresses, path, checksums.
    assert meta["encoding"]["mask_fields"] == [
        "ip.checksum",
        "ip.dst",
        "ip.id",
        "ip.src",
        "ip.ttl",
        "tcp.checksum",
        "udp.checksum",
    ]
    assert meta["training"]["command"].startswith("amlhp train ")
    assert meta["training"]["data_fingerprint"].startswith("sha256:")
    assert meta["metrics"]["accuracy"] > 0.9
    # calibrated on the held-out-source folds it names, with its own OOD cut
    policy = DecisionPolicy.from_meta(meta["decision"])
    assert policy.provenance["calibrated"] is True
    assert len(policy.provenance["folds"]) >= 5
    assert 0.0 < policy.benign_below <= policy.malicious_at < 1.0
    assert policy.energy_max == pytest.approx(meta["val_energy_quantiles"]["q0.999"], abs=1e-3)


# Captures whose packets all carry one label (MANIFEST.csv), and what the model must say
# about most of them. The model was trained on a sample of these files: this checks that
# the artifact, the encoder and the scorer fit together, not generalisation.
SINGLE_LABEL = {
    "stopddos/amp.TCP.reflection.SYNACK.pcap": "ddos_reflection_synack",
    "stopddos/amp.UDP.isakmp.pcap": "ddos_udp_amplification",
    "mqttset_reduced/slowite.pcap": "mqtt_slowite_dos",
    "mqttset_reduced/benign-5mb/benign-5mb-test.pcap": "benign",
}


@pytest.mark.public_data
@pytest.mark.parametrize(("capture", "label"), sorted(SINGLE_LABEL.items()))
def test_default_model_on_public_captures(public_data: Path, capture: str, label: str) -> None:
    torch.set_num_threads(1)
    scorer = load_scorer(device="cpu")
    table = encode_captures([public_data / capture], scorer.encoder_config).slice(0, 1000)
    scores = scorer.score_batch(table)
    names = Counter(scorer.classes[int(i)] for i in scores.class_ids[scores.ok])
    top, count = names.most_common(1)[0]
    assert top == label, names
    assert count / scores.ok.sum() > 0.8, names
