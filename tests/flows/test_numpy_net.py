"""The flow CNN without torch: the numpy network equals the torch one, and serving needs
no torch at all."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from amlhp.flows.artifact import DEFAULT_MODEL, load_flow_model
from amlhp.flows.numpy_net import NumpyFlowCNN
from amlhp.flows.shapley import exact_shapley

from .conftest import small_model
from .test_shapley import flow_matrices


def numpy_twin(net: torch.nn.Module) -> NumpyFlowCNN:
    return NumpyFlowCNN({k: v.detach().numpy() for k, v in net.state_dict().items()})


@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_logits_equal_torch_on_real_flow_matrices(seed: int) -> None:
    net = small_model(num_classes=5, seed=seed)
    x = flow_matrices()
    # and a matrix whose payload holds every byte value and every marker
    busy = x[:1].clone()
    busy[0, 0, 41:3041] = torch.from_numpy(np.resize(np.r_[np.arange(256), -4, -8, -1], 3000))
    x = torch.cat([x, busy])
    with torch.inference_mode():
        want = net(x).numpy()
    got = numpy_twin(net)(x.numpy())
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


@pytest.mark.parametrize("last", [-1, 0, 31, 32, 63, 659, 2911, 2912, 2999])
def test_the_payload_branch_reads_only_the_slots_that_decide_it(last: int) -> None:
    """Rows whose payload ends at slot ``last`` (padding after it): the branch over the
    prefix it reads gives what it gives over all 3,000 slots."""
    from amlhp.flows.numpy_net import payload_features, payload_prefix
    from amlhp.flows.record import PAYLOAD_OFFSET, PAYLOAD_SLOTS

    net = numpy_twin(small_model(num_classes=5, seed=0))
    rows = flow_matrices().numpy()[:, 0].copy()
    rng = np.random.default_rng(last + 2)
    slots = rows[:, PAYLOAD_OFFSET:]
    slots[:] = -1.0
    slots[:, : last + 1] = rng.integers(0, 256, size=(slots.shape[0], last + 1))
    if last >= 0:
        slots[:, last] = -8.0  # an END marker as the last used slot
    prefix = payload_prefix(slots)
    assert prefix % 4 == 0
    assert prefix > last
    assert (prefix < PAYLOAD_SLOTS) == (last < 2912)  # window 91 (the last) reads 2912-2995
    full = net._payload(payload_features(slots))
    assert np.abs(net.row_parts(rows)[:, 16:] - full).max() < 1e-5


def test_numpy_shapley_equals_torch_shapley() -> None:
    net = small_model(num_classes=4, seed=2)
    x = flow_matrices()
    phi_t, p_t = exact_shapley(net, x, temperature=0.8)
    phi_n, p_n = exact_shapley(numpy_twin(net), x.numpy(), temperature=0.8)
    assert np.abs(phi_t - phi_n).max() < 1e-5
    assert np.abs(p_t - p_n).max() < 1e-5
    assert np.abs(phi_n).max() > 1e-4  # the groups do move the probabilities


def test_misshapen_weights_are_refused() -> None:
    from amlhp.flows.exceptions import FlowArtifactError

    weights = {k: v.detach().numpy() for k, v in small_model().state_dict().items()}
    del weights["inter.weight"]
    with pytest.raises(FlowArtifactError, match=r"inter\.weight"):
        NumpyFlowCNN(weights)


def test_the_committed_model_loads_and_scores_without_torch() -> None:
    """What the serving install does: load the bundled model and score flows, with
    torch made unimportable."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import itertools\n"
        "from amlhp.data import DEMO_CAPTURE\n"
        "from amlhp.encoders.readers import iter_raw_batches\n"
        "from amlhp.flows.artifact import DEFAULT_MODEL, load_flow_model\n"
        "from amlhp.flows.assembler import FlowAssembler, iter_closed\n"
        "from amlhp.flows.online import FlowScorer\n"
        "m = load_flow_model(DEFAULT_MODEL)\n"
        "raw = itertools.islice(iter_raw_batches(DEMO_CAPTURE, gateway='gw'), 2)\n"
        "closed = list(iter_closed(FlowAssembler(m.config), raw))\n"
        "b = FlowScorer(m, explain_every=5).score(closed)\n"
        "assert b.num_rows > 50, b.num_rows\n"
        "assert any(a is not None for a in b.column('attributions').to_pylist())\n"
        "print(b.num_rows)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_committed_model_is_whole_and_names_its_classes() -> None:
    model = load_flow_model(DEFAULT_MODEL)
    assert len(model.classes) == model.network.num_classes
    assert {"lab-hub", "lab-telemetry-sensor", "HueBridge"} <= set(model.classes)
    assert 0.0 < model.refiner.threshold < 1.0
    assert "127.0.0.0/8" in model.config.local_nets  # the lab's hosts are devices too
    # the torch network built from the same weights gives the same logits
    x = flow_matrices().numpy()
    with torch.inference_mode():
        want = model.torch_network()(torch.from_numpy(x)).numpy()
    assert np.abs(model.network(x) - want).max() < 1e-4
