"""The fast re-parameterisation and its ONNX export compute the trained network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amlhp.model.artifact import Artifact
from amlhp.model.dataset import LabelledPackets
from amlhp.model.network import AMLHPNet
from amlhp.model.registry import create_model
from amlhp.model.reparam import FastAMLHP, export_friendly
from amlhp.model.train import model_inputs_for

VARIANTS = ["amlhp", "amlhp-value", "amlhp-no-header", "amlhp-no-payload", "amlhp-fc-fusion"]


def _perturbed(name: str) -> AMLHPNet:
    torch.manual_seed(0)
    net = create_model(name, num_classes=5)
    assert isinstance(net, AMLHPNet)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return net.eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_fast_equals_plain_on_random_bytes(name: str) -> None:
    torch.set_num_threads(1)
    net = _perturbed(name)
    fast = FastAMLHP(net).eval()
    h = torch.randint(0, 256, (300, 128), dtype=torch.uint8)
    d = torch.randint(0, 256, (300, 64), dtype=torch.uint8)
    h[:150, 20:60] = 0xFF
    with torch.inference_mode():
        a, b, c = net(h, d), fast(h, d), export_friendly(fast)(h, d)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.allclose(a, c, atol=1e-4)
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_fast_equals_plain_on_encoded_packets(
    tiny_artifact: Artifact, synthetic_data: LabelledPackets
) -> None:
    net = tiny_artifact.model
    assert isinstance(net, AMLHPNet)
    inputs = model_inputs_for(net, synthetic_data)
    with torch.inference_mode():
        a = net(*inputs)
        b = FastAMLHP(net)(*inputs)
    assert torch.equal(a.argmax(1), b.argmax(1))
    assert float((a - b).abs().max()) < 1e-4


def test_onnx_parity(tiny_artifact: Artifact, synthetic_data: LabelledPackets) -> None:
    pytest.importorskip("onnxruntime")
    from amlhp.model.onnx_export import OnnxRunner

    assert isinstance(tiny_artifact.model, AMLHPNet)
    fast = export_friendly(FastAMLHP(tiny_artifact.model))
    runner = OnnxRunner(fast, 64, threads=1)  # raises on any disagreement
    assert not runner.session.get_session_options().enable_profiling  # no profiler dumps
    h, d = model_inputs_for(tiny_artifact.model, synthetic_data)
    got = runner.run(h.numpy(), d.numpy())
    with torch.inference_mode():
        want = tiny_artifact.model(h, d).numpy()
    assert np.array_equal(got.argmax(1), want.argmax(1))
    assert np.abs(got - want).max() < 1e-4
