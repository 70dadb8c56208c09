"""Training: a short run on a small labelled sample must classify held-out packets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from amlhp.encoders.layout import EncoderConfig
from amlhp.model import train as train_module
from amlhp.model.augment import ipv6_twins
from amlhp.model.dataset import LabelledPackets, load_labelled
from amlhp.model.labels import LabelSpec, load_labels
from amlhp.model.train import TrainConfig, model_inputs_for, predict
from amlhp.model.workflow import train_and_evaluate

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


def test_training_shows_the_model_ipv6_twins(
    synthetic_data: LabelledPackets, synthetic_spec: LabelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``ipv6_twins`` the training batches carry IPv6 twins (made with the data's own
    masks), and the model still learns: it judges the IPv6 twins of held-out packets
    (all turned) as well as the packets."""
    seen: list[torch.Tensor] = []

    def recorded(
        header: torch.Tensor, p: float, masks: tuple[str, ...], g: torch.Generator
    ) -> torch.Tensor:
        assert masks == synthetic_data.config.mask_fields
        out = ipv6_twins(header, p, masks, g)
        seen.append(out[:, 0])
        return out

    monkeypatch.setattr(train_module, "ipv6_twins", recorded)
    outcome = train_and_evaluate(
        "amlhp", synthetic_data, synthetic_spec, split_kind="flow", max_per_class=None,
        config=TrainConfig(epochs=2, batch_size=32, seed=0, ipv6_twins=0.5),
    )  # fmt: skip
    first = torch.cat(seen)
    assert 0.3 < (first == 0x6A).float().mean() < 0.7  # about half are twins
    test = synthetic_data.subset(outcome.split.test)
    header, payload = model_inputs_for(outcome.model, test)
    turned = ipv6_twins(header, 1.0, test.config.mask_fields, torch.Generator().manual_seed(1))
    assert (turned[:, 0] == 0x6A).float().mean() > 0.5  # most test packets have a twin
    as_is, _ = predict(outcome.model, (header, payload))
    as_ipv6, _ = predict(outcome.model, (turned, payload))
    assert (as_is == test.labels).mean() >= 0.9
    assert (as_ipv6 == test.labels).mean() >= 0.9
