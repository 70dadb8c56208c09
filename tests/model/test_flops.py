"""Parameter and FLOP counts: conventions and the figures the README quotes."""

from __future__ import annotations

import torch

from amlhp.model.flops import count_flops, model_cost
from amlhp.model.network import AMLHPNet
from amlhp.model.registry import create_model


def test_amlhp_cost_within_budget() -> None:
    cost = model_cost(create_model("amlhp", num_classes=9))
    assert cost.params <= 25_000
    assert 1_000_000 < cost.flops < 8_000_000
    assert cost.macs * 2 == cost.flops
    assert cost.size_bytes < 200_000  # float32 weights + safetensors header


def test_flops_of_a_linear_layer_count_two_per_multiply_add() -> None:
    class Lin(torch.nn.Module):
        input_kind = "packet_bytes"
        input_bytes = 50

        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(50, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.fc(x.float())
            return out

    assert count_flops(Lin()) == 2 * 50 * 10


def test_described_and_folded_counts_differ_but_model_is_restored() -> None:
    model = create_model("amlhp", num_classes=9).eval()
    assert isinstance(model, AMLHPNet)
    described = count_flops(model)
    folded = count_flops(model, as_described=False)
    assert described != folded
    assert not model.training
    assert not model.header.folded


def test_deeppacket_published_size() -> None:
    # 200 filters: conv 1,000 + 200,200 params; FC 49,400 -> 200 -> 100 -> 50 -> K.
    model = create_model("deeppacket", num_classes=9)
    expected = (
        (200 * 4 + 200)
        + (200 * 200 * 5 + 200)
        + (49_400 * 200 + 200)
        + (200 * 100 + 100)
        + (100 * 50 + 50)
        + (50 * 9 + 9)
    )
    assert sum(p.numel() for p in model.parameters()) == expected
