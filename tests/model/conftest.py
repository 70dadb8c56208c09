"""Fixtures of the model tests: small synthetic labelled captures and a tiny trained model.

The synthetic classes differ the way real traffic classes do (transport, ports, flags,
payload), so a short training run must separate them; flows have several packets each, so
that the by-flow split has something to keep together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from amlhp.encoders.layout import EncoderConfig
from amlhp.model.artifact import Artifact, load_artifact
from amlhp.model.dataset import LabelledPackets, load_labelled
from amlhp.model.labels import LabelSpec, load_labels
from amlhp.model.train import TrainConfig
from amlhp.model.workflow import Outcome, save_outcome, train_and_evaluate
from tests.support import synth

CLASSES = ("mqtt_connect", "syn_flood", "dns_response", "tls_client")
FLOWS_PER_CLASS = 40
PACKETS_PER_FLOW = 5


def _packet(kind: str, rng: random.Random, flow: int, i: int) -> bytes:
    src = f"10.{flow % 200}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    dst = f"192.168.{flow % 7}.{rng.randrange(1, 255)}"
    ttl = rng.choice([32, 64, 128])
    if kind == "mqtt_connect":
        client = bytes(rng.randrange(97, 123) for _ in range(rng.randrange(4, 12)))
        body = b"\x10" + bytes([12 + len(client)]) + b"\x00\x04MQTT\x04\x02\x00\x3c" + client
        seg = synth.tcp(body, sport=40000 + flow, dport=1883, seq=1000 + i * 50, flags=0x18)
        return synth.ipv4(seg, 6, src, dst, ttl=ttl)
    if kind == "syn_flood":
        seg = synth.tcp(
            b"", sport=rng.randrange(1024, 65535), dport=80, seq=rng.randrange(2**32), flags=0x02
        )
        return synth.ipv4(seg, 6, src, dst, ttl=ttl)
    if kind == "dns_response":
        body = bytes([rng.randrange(256), rng.randrange(256), 0x81, 0x80]) + bytes(
            rng.randrange(256) for _ in range(rng.randrange(40, 200))
        )
        return synth.ipv4(synth.udp(body, sport=53, dport=30000 + flow), 17, src, dst, ttl=ttl)
    body = b"\x16\x03\x01" + bytes(rng.randrange(256) for _ in range(rng.randrange(30, 120)))
    seg = synth.tcp(body, sport=50000 + flow, dport=443, seq=5000 + i * 100, flags=0x18)
    return synth.ipv4(seg, 6, src, dst, ttl=ttl)


def write_synthetic_captures(folder: Path, seed: int = 0) -> Path:
    """One pcap per class (two for tls_client) and a labels.yaml; returns the labels path."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for kind in CLASSES:
        records: list[synth.Record] = []
        for flow in range(FLOWS_PER_CLASS):
            fixed = random.Random(rng.random())
            for i in range(PACKETS_PER_FLOW):
                frame = synth.ethernet(
                    _packet(kind, fixed if kind != "syn_flood" else rng, flow, i)
                )
                records.append(
                    synth.Record(frame, ts_ns=1_700_000_000_000_000_000 + len(records) * 1000)
                )
        if kind == "tls_client":
            half = len(records) // 2
            synth.write_pcap(folder / f"{kind}-a.pcap", records[:half])
            synth.write_pcap(folder / f"{kind}-b.pcap", records[half:])
        else:
            synth.write_pcap(folder / f"{kind}.pcap", records)
    labels = folder / "labels.yaml"
    labels.write_text(
        "classes:\n"
        "  mqtt_connect: [mqtt_connect.pcap]\n"
        "  syn_flood: [syn_flood.pcap]\n"
        "  dns_response: [dns_response.pcap]\n"
        "  tls_client: ['tls_client-*.pcap']\n"
    )
    return labels


@pytest.fixture(scope="session")
def synthetic_labels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels.yaml beside four synthetic captures (200 packets per class)."""
    return write_synthetic_captures(tmp_path_factory.mktemp("captures"))


@pytest.fixture(scope="session")
def synthetic_spec(synthetic_labels: Path) -> LabelSpec:
    return load_labels(synthetic_labels)


@pytest.fixture(scope="session")
def synthetic_data(synthetic_spec: LabelSpec) -> LabelledPackets:
    return load_labelled(synthetic_spec, EncoderConfig(payload_bytes=1500), seed=0)


def quick_train(
    model: str,
    data: LabelledPackets,
    spec: LabelSpec,
    *,
    split_kind: str = "flow",
    epochs: int = 3,
    seed: int = 0,
    max_per_class: int | None = None,
) -> Outcome:
    """A short training run with the tests' batch size (32)."""
    return train_and_evaluate(
        model,
        data,
        spec,
        split_kind=split_kind,
        config=TrainConfig(epochs=epochs, batch_size=32, seed=seed),
        max_per_class=max_per_class,
    )


@pytest.fixture(scope="session")
def tiny_artifact(
    tmp_path_factory: pytest.TempPathFactory,
    synthetic_data: LabelledPackets,
    synthetic_spec: LabelSpec,
) -> Artifact:
    """IoT-AMLHP trained for 3 short epochs on the synthetic captures, saved and reloaded."""
    torch.set_num_threads(1)
    outcome = quick_train("amlhp", synthetic_data, synthetic_spec, epochs=3)
    path = tmp_path_factory.mktemp("artifact") / "tiny"
    save_outcome(outcome, synthetic_data, path, "pytest tiny_artifact")
    return load_artifact(path)


@pytest.fixture
def small_threads() -> Callable[[], None]:
    """Keep torch to one thread in tests: the machine is shared."""
    torch.set_num_threads(1)
    return lambda: None
