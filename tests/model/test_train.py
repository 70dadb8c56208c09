"""Training: a short run on a small labelled sample must classify held-out packets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from amlhp.encoders.layout import EncoderConfig
from amlhp.model.dataset import LabelledPackets, load_labelled
from amlhp.model.labels import LabelSpec, load_labels

from .conftest import quick_train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("split_kind", ["random", "flow"])
def test_short_training_reaches_high_accuracy(
    synthetic_data: LabelledPackets, synthetic_spec: LabelSpec, split_kind: str
) -> None:
    outcome = quick_train("amlhp", synthetic_data, synthetic_spec, split_kind=split_kind, epochs=3)
    held_out = outcome.split.test
    assert held_out.size >= 60
    assert set(held_out.tolist()).isdisjoint(outcome.split.train.tolist())
    assert outcome.report.accuracy >= 0.9, outcome.report.summary()
    assert outcome.report.macro_f1 >= 0.9
    losses = [h["train_loss"] for h in outcome.result.history]
    assert losses[-1] < losses[0]


def test_training_is_reproducible(
    synthetic_data: LabelledPackets, synthetic_spec: LabelSpec
) -> None:
    sub = synthetic_data.subset(np.arange(0, 800, 2))
    runs = [
        quick_train("amlhp", sub, synthetic_spec, split_kind="random", epochs=1, seed=7)
        for _ in range(2)
    ]
    for (name, a), (_, b) in zip(
        runs[0].model.state_dict().items(), runs[1].model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_baseline_trains_on_packet_bytes(
    synthetic_data: LabelledPackets, synthetic_spec: LabelSpec
) -> None:
    outcome = quick_train("sam", synthetic_data, synthetic_spec, epochs=2)
    assert outcome.report.accuracy >= 0.9
    assert outcome.result_config["lr"] == 1e-3  # the baselines' default


@pytest.mark.public_data
@pytest.mark.slow
def test_short_training_on_public_captures(public_data: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.yaml"
    labels.write_text(
        f"base: {public_data}\n"
        "classes:\n"
        "  mqtt_bruteforce: [mqttset_reduced/bruteforce.pcapng]\n"
        "  dos_synflood: [stopddos/pkt.TCP.synflood.spoofed.pcap]\n"
        "  ddos_udp_amplification: [stopddos/amp.UDP.isakmp.pcap]\n"
    )
    spec = load_labels(labels)
    data = load_labelled(spec, EncoderConfig(), max_per_class=300, seed=0)
    outcome = quick_train("amlhp", data, spec, epochs=3, max_per_class=300)
    assert outcome.split.test.size >= 60
    assert outcome.report.accuracy >= 0.9, outcome.report.summary()
