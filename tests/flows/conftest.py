"""Fixtures for the flow tests: hand-built packets, raw batches and a small flow model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from amlhp.encoders import linktypes as lt
from amlhp.flows.artifact import save_flow_model
from amlhp.flows.network import FlowCNN
from amlhp.flows.record import FlowConfig
from amlhp.flows.refine import Refiner
from amlhp.flows.shapley import GROUPS
from amlhp.wire import raw_schema
from tests.support import synth

T0 = 1_700_000_000_000_000_000
DEVICE = "192.168.1.10"
REMOTE = "52.1.2.3"


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every flow test scores on one torch thread."""


def tcp_frame(
    payload: bytes,
    *,
    out: bool = True,
    device: str = DEVICE,
    remote: str = REMOTE,
    dport: int = 49152,
    rport: int = 443,
) -> bytes:
    """An Ethernet/IPv4/TCP frame between the device and the remote end."""
    if out:
        segment = synth.tcp(payload, sport=dport, dport=rport)
        return synth.ethernet(synth.ipv4(segment, 6, src=device, dst=remote))
    segment = synth.tcp(payload, sport=rport, dport=dport)
    return synth.ethernet(synth.ipv4(segment, 6, src=remote, dst=device))


def udp_frame(payload: bytes, src: str, dst: str, sport: int = 5000, dport: int = 53) -> bytes:
    return synth.ethernet(synth.ipv4(synth.udp(payload, sport=sport, dport=dport), 17, src, dst))


def raw(
    frames: Sequence[bytes],
    times_s: Sequence[float],
    gateway: str = "gw-test",
    start_seq: int = 0,
) -> pa.RecordBatch:
    """A raw-schema batch of Ethernet frames at the given times (seconds after T0)."""
    n = len(frames)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([gateway] * n, pa.string()),
            pa.array([T0 + round(t * 1e9) for t in times_s], pa.int64()),
            pa.array(range(start_seq, start_seq + n), pa.uint64()),
            pa.array([lt.ETHERNET] * n, pa.uint16()),
            pa.array([len(f) for f in frames], pa.uint32()),
            pa.array(list(frames), pa.binary()),
        ],
        schema=raw_schema(),
    )


def small_model(num_classes: int = 3, blind: Sequence[str] = (), seed: int = 0) -> FlowCNN:
    torch.manual_seed(seed)
    net = FlowCNN(num_classes=num_classes, blind=blind)
    net.eval()
    return net


def neutral_refiner(num_classes: int) -> Refiner:
    g = len(GROUPS)
    return Refiner(
        temperature=1.0,
        threshold=0.0,
        profiles=np.full((num_classes, g), np.nan, np.float32),
        radius=np.full(num_classes, np.nan, np.float32),
    )


@pytest.fixture
def flow_model_dir(tmp_path: Path) -> Path:
    """An (untrained) flow model artifact with devices in 192.168.0.0/16."""
    net = small_model()
    config = FlowConfig(local_nets=("192.168.0.0/16",))
    return save_flow_model(
        tmp_path / "flow-model", net, ["a", "b", "c"], config, neutral_refiner(3)
    )
