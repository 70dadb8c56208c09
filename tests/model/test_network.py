"""Shapes, finiteness, gradients and the parameter budget of every registered model."""

from __future__ import annotations

import pytest
import torch

from amlhp.model.exceptions import UnknownModelError
from amlhp.model.flops import example_inputs
from amlhp.model.network import AMLHPNet, ModalityExtractor, byte_features
from amlhp.model.registry import MODEL_NAMES, create_model

SMALL = [n for n in MODEL_NAMES if n != "deeppacket"]  # the full Deep Packet is 10M params


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("name", SMALL)
def test_logits_shape_and_finite(name: str) -> None:
    model = create_model(name, num_classes=7).eval()
    inputs = example_inputs(model, batch=5)
    with torch.no_grad():
        logits = model(*inputs)
        features = model.forward_features(*inputs)  # type: ignore[operator]
        again = model.forward_head(features)  # type: ignore[operator]
    assert logits.shape == (5, 7)
    assert torch.isfinite(logits).all()
    assert torch.allclose(again, logits, atol=1e-5)


@pytest.mark.parametrize(
    "name", [n for n in SMALL if n not in ("amlhp-no-header", "amlhp-no-payload")]
)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).train()
    loss = torch.nn.functional.cross_entropy(
        model(*example_inputs(model, batch=8)), torch.arange(8) % 4
    )
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)
    ]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize(
    ("name", "dead"), [("amlhp-no-header", "header."), ("amlhp-no-payload", "payload.")]
)
def test_masked_variant_ignores_its_modality(name: str, dead: str) -> None:
    model = create_model(name, num_classes=3).eval()
    h, d = example_inputs(model, batch=4)
    with torch.no_grad():
        base = model(h, d)
        changed = (
            model(torch.randint_like(h, 256), d)
            if dead == "header."
            else model(h, torch.randint_like(d, 256))
        )
    assert torch.allclose(base, changed)


@pytest.mark.parametrize(
    "name", ["amlhp", "amlhp-no-header", "amlhp-no-payload", "amlhp-fc-fusion", "amlhp-value"]
)
def test_parameter_budget(name: str) -> None:
    params = sum(p.numel() for p in create_model(name, num_classes=9).parameters())
    assert params <= 25_000, f"{name} has {params} parameters"


def test_amlhp_shapes_inside() -> None:
    model = create_model("amlhp", num_classes=9)
    assert isinstance(model, AMLHPNet)
    h, d = example_inputs(model, batch=3)
    tokens = model.header(byte_features(h, "bits"))
    assert tokens.shape == (3, 16, 32)  # (N, tokens, feature_dim): 128 bytes pooled by 4
    assert model.payload(byte_features(d, "bits")).shape == (3, 16, 32)  # 64 bytes pooled by 2
    assert model.forward_features(h, d).shape == (3, 32, 32)


@pytest.mark.parametrize("encoding", ["bits", "value"])
def test_folded_extractor_equals_the_blocks(encoding: str) -> None:
    torch.manual_seed(1)
    ext = ModalityExtractor(
        length=64,
        kernel_sizes=(2, 4, 8),
        channels=6,
        tokens=5,
        feature_dim=32,
        in_channels=8 if encoding == "bits" else 1,
    )
    with torch.no_grad():
        for p in ext.parameters():
            p.add_(torch.randn_like(p))
    x = byte_features(torch.randint(0, 256, (9, 64), dtype=torch.uint8), encoding)
    blocks = ext.forward_blocks(x)
    ext.folded = True
    assert torch.allclose(ext(x), blocks, atol=1e-4)


def test_bits_are_msb_first() -> None:
    bits = byte_features(torch.tensor([[0x81, 0x06]], dtype=torch.uint8), "bits")
    assert bits[0, :, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    assert bits[0, :, 1].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]


def test_unknown_model_and_bad_kwargs() -> None:
    with pytest.raises(UnknownModelError, match="unknown model"):
        create_model("resnet")
    with pytest.raises(UnknownModelError, match="bad arguments"):
        create_model("amlhp", heads_per_token=3)
