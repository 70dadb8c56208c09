"""Hidden-layer class profiles: a flow unlike its class's flows is uncertain."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amlhp.flows.artifact import load_flow_model
from amlhp.flows.assembler import FlowAssembler, iter_closed
from amlhp.flows.hidden_profile import MIN_FLOWS, distance, fit_hidden_profiles
from amlhp.flows.online import FlowScorer

from .conftest import raw, tcp_frame, udp_frame


def test_profiles_measure_distance_in_units_of_each_class_radius() -> None:
    rng = np.random.default_rng(0)
    near = rng.normal(0.0, 1.0, (200, 4)).astype(np.float32)
    far = near + 10.0
    hidden = np.concatenate([near, far])
    labels = np.r_[np.zeros(200, np.int64), np.ones(200, np.int64)]
    doc = fit_hidden_profiles(hidden, labels, labels, classes=3)
    assert doc["radius"][2] is None  # no right flow of class 2: no profile, no check
    d = distance(doc, hidden, labels)
    assert 0.97 <= float((d <= 1.0).mean()) <= 1.0  # the 99th percentile radius
    # class 1's flows are 10 units away from class 0's: far out of class 0's profile
    assert float(distance(doc, far, np.zeros(200, np.int64)).min()) > 2.0
    assert float(distance(doc, far, np.full(200, 2, np.int64)).max()) == 0.0
    few = fit_hidden_profiles(hidden[: MIN_FLOWS - 1], labels[: MIN_FLOWS - 1],
                              labels[: MIN_FLOWS - 1], classes=1)  # fmt: skip
    assert few["radius"] == [None]


def test_a_flow_out_of_its_class_profile_is_uncertain(flow_model_dir: Path) -> None:
    model = load_flow_model(flow_model_dir)
    frames = [tcp_frame(b"GET /%d" % i, rport=80 + i) for i in range(3)]
    frames.append(udp_frame(b"\x12\x34query", "192.168.1.10", "8.8.8.8"))
    closed = list(iter_closed(FlowAssembler(model.config), [raw(frames, [0, 1, 2, 30])]))
    before = FlowScorer(model).score(closed).column("uncertain").to_pylist()
    assert before == [False] * len(closed)  # threshold 0, no profile: all accepted
    k, width = len(model.classes), model.numpy_network().h0_b.shape[0]
    model.meta["hidden_profile"] = {  # every class a point far from any flow
        "centroids": [[1e6] * width] * k,
        "radius": [1.0] * k,
    }
    after = FlowScorer(model).score(closed).column("uncertain").to_pylist()
    assert after == [True] * len(closed)
