"""Attribution sanity: a group the model cannot see gets exactly 0; exact == Captum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from amlhp.flows.assembler import FlowAssembler, iter_closed
from amlhp.flows.dataset import rows_of
from amlhp.flows.record import FlowConfig
from amlhp.flows.shapley import GROUPS, absent_input, captum_shapley, exact_shapley

from .conftest import raw, small_model, tcp_frame, udp_frame


def flow_matrices() -> Tensor:
    """Two real matrices: a TCP flow with two preceding flows, and a lone UDP flow."""
    frames = [tcp_frame(b"GET /%d" % i, rport=80 + i) for i in range(3)]
    frames.append(udp_frame(b"\x12\x34query", "192.168.1.10", "8.8.8.8"))
    flows = list(iter_closed(FlowAssembler(FlowConfig()), [raw(frames, [0, 1, 2, 30])]))
    tcp = [f for f in flows if f.key.proto == 6]
    udp = [f for f in flows if f.key.proto == 17]
    mats = [rows_of([tcp[2], tcp[1], tcp[0]], 6), rows_of([udp[0]], 6)]
    return torch.from_numpy(np.stack(mats))


class Wrapped(nn.Module):
    """Hides the flow CNN's row structure, so exact_shapley takes its generic path."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.num_classes = inner.num_classes

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.inner(x)
        return out


@pytest.mark.parametrize("hidden", ["payload", "addresses_ports", "context"])
def test_a_group_the_model_cannot_see_gets_zero(hidden: str) -> None:
    net = small_model(blind=(hidden,))
    x = flow_matrices()
    phi, probs = exact_shapley(net, x, temperature=0.7)
    g = GROUPS.index(hidden)
    assert np.abs(phi[:, g, :]).max() < 1e-7
    others = [i for i in range(len(GROUPS)) if i != g]
    assert np.abs(phi[:, others, :]).max() > 1e-5  # the check can fail: others do move
    target = int(probs[0].argmax())
    cap = captum_shapley(net, x[:1], target, temperature=0.7)
    assert abs(cap[g]) < 1e-7


def test_efficiency_fast_path_generic_path_and_captum_agree() -> None:
    net = small_model(seed=3)
    x = flow_matrices()
    phi, probs = exact_shapley(net, x, temperature=1.3)
    slow, slow_probs = exact_shapley(Wrapped(net), x, temperature=1.3)
    np.testing.assert_allclose(phi, slow, atol=1e-6)
    np.testing.assert_allclose(probs, slow_probs, atol=1e-6)
    with torch.inference_mode():
        nothing = torch.softmax(net(torch.from_numpy(absent_input(6))[None]) / 1.3, dim=1).numpy()[
            0
        ]
    # efficiency: the attributions sum to p(flow) - p(nothing), for every class
    np.testing.assert_allclose(phi.sum(axis=1), probs - nothing, atol=1e-5)
    target = int(probs[0].argmax())
    cap = captum_shapley(net, x[:1], target, temperature=1.3)
    np.testing.assert_allclose(cap, phi[0, :, target], atol=1e-6)
    # the lone UDP flow has no context rows: the context group cannot matter
    assert np.abs(phi[1, GROUPS.index("context")]).max() < 1e-7
