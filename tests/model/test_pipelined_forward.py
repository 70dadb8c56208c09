"""The GPU path's batching (fixed batches, padding, two slots, reassembly), checked on the CPU.

No GPU is lent to CI: on the CPU the class runs the same slot rotation without pinning or
streams, so what can be wrong in it (rows lost, reordered, padding leaking into results, a
slot overwritten before it was read) shows here; ``test_scorer.py::test_cuda_matches_cpu``
runs the CUDA version where a device exists.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from amlhp.model.artifact import Artifact
from amlhp.model.exceptions import ScoringError
from amlhp.model.network import AMLHPNet
from amlhp.model.pipelined_forward import PipelinedForward
from amlhp.model.reparam import FastAMLHP

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _fast(artifact: Artifact) -> FastAMLHP:
    net = artifact.model
    assert isinstance(net, AMLHPNet)
    return FastAMLHP(net).eval()


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200, 257])
def test_fixed_batches_give_the_plain_forward_pass(tiny_artifact: Artifact, n: int) -> None:
    fast = _fast(tiny_artifact)
    calls: list[tuple[int, ...]] = []

    def net(*xs: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape[0] for x in xs))
        return fast(*xs)

    k = len(tiny_artifact.classes)
    runner = PipelinedForward(net, torch.device("cpu"), widths=(128, 64), classes=k, batch=64)
    rng = np.random.default_rng(n)
    header = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    payload = rng.integers(0, 256, (n, 64), dtype=np.uint8)
    got = runner(header, payload)
    with torch.inference_mode():
        want = fast(torch.from_numpy(header), torch.from_numpy(payload)).numpy()
    assert got.shape == (n, k)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert calls == [(64, 64)] * -(-n // 64)  # every pass has the fixed shape


def test_a_second_request_reuses_the_slots(tiny_artifact: Artifact) -> None:
    fast = _fast(tiny_artifact)
    runner = PipelinedForward(fast, torch.device("cpu"), widths=(128, 64),
                              classes=len(tiny_artifact.classes), batch=32)  # fmt: skip
    rng = np.random.default_rng(0)
    header = rng.integers(0, 256, (100, 128), dtype=np.uint8)
    payload = rng.integers(0, 256, (100, 64), dtype=np.uint8)
    first = runner(header, payload)
    small = runner(header[:5], payload[:5])  # stale rows of the last request must not leak
    np.testing.assert_allclose(small, first[:5], rtol=0, atol=1e-6)
    assert runner(header[:0], payload[:0]).shape == (0, len(tiny_artifact.classes))


def test_refuses_wrong_inputs(tiny_artifact: Artifact) -> None:
    fast = _fast(tiny_artifact)
    runner = PipelinedForward(fast, torch.device("cpu"), widths=(128, 64), classes=4, batch=8)
    with pytest.raises(ScoringError, match="expected 2 inputs"):
        runner(np.zeros((3, 128), np.uint8))
    with pytest.raises(ScoringError, match="expected"):
        runner(np.zeros((3, 128), np.uint8), np.zeros((3, 32), np.uint8))
    with pytest.raises(ScoringError, match="at least 1"):
        PipelinedForward(fast, torch.device("cpu"), widths=(128,), classes=4, batch=0)
