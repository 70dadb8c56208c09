"""Per-packet explanations of IoT-AMLHP verdicts over named header fields."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.model.artifact import save_artifact
from amlhp.model.packet_explain import FIELD_NAMES, explain_packets, header_fields
from amlhp.model.registry import create_model, model_kwargs
from tests.flows.conftest import T0, raw, tcp_frame, udp_frame
from tests.support.synth import Record, write_pcap


def test_fields_cover_the_header_once() -> None:
    covered = np.zeros(128, np.int64)
    for _, lo, hi in header_fields():
        covered[lo:hi] += 1
    assert (covered == 1).all()
    assert {"ip.ttl", "tcp.flags", "tcp.dport", "udp.dport", "payload"} <= set(FIELD_NAMES)


def test_absent_fields_and_an_unseen_payload_get_zero() -> None:
    torch.manual_seed(0)
    model = create_model("amlhp-no-payload", num_classes=3)
    batch = raw([udp_frame(b"hello", "192.168.1.10", "8.8.8.8"), tcp_frame(b"GET /")], [0, 1])
    header, payload, ok = model_inputs(encode_batch(batch, EncoderConfig()))
    assert ok.all()
    attr, probs = explain_packets(model, header, payload, samples=4)
    names = FIELD_NAMES
    assert attr[0, names.index("payload")] == 0.0  # the model masks its payload
    tcp_fields = [i for i, n in enumerate(names) if n.startswith("tcp.")]
    udp_fields = [i for i, n in enumerate(names) if n.startswith("udp.")]
    assert np.all(attr[0, tcp_fields] == 0.0)  # a UDP packet has no TCP fields
    assert np.all(attr[1, udp_fields] == 0.0)
    assert np.abs(attr[0]).max() > 0  # ... but its other fields do matter
    with torch.no_grad():
        h = torch.from_numpy(np.array(header, np.float32))
        base = torch.softmax(model(torch.full_like(h, 255.0), torch.zeros(2, 64)), dim=1)
    pred = probs.argmax(1)
    gap = probs[np.arange(2), pred] - base.numpy()[np.arange(2), pred]
    np.testing.assert_allclose(attr.sum(axis=1), gap, atol=1e-5)  # efficiency


def test_fields_the_encoder_masks_are_not_players() -> None:
    torch.manual_seed(0)
    model = create_model("amlhp", num_classes=3)
    masked = ("ip.src", "ip.dst", "ip.ttl", "ip.id", "ip.checksum", "tcp.checksum")
    config = EncoderConfig(mask_fields=masked)
    batch = raw([tcp_frame(b"GET /"), tcp_frame(b"POST /x")], [0, 1])
    header, payload, ok = model_inputs(encode_batch(batch, config))
    assert ok.all()
    free, _ = explain_packets(model, header, payload, samples=4)
    attr, probs = explain_packets(model, header, payload, samples=4, masked_fields=masked)
    idx = [FIELD_NAMES.index(n) for n in masked]
    # Zeroed by the encoder: against the 0xff baseline they would look influential.
    assert np.abs(free[:, idx]).max() > 0
    assert np.all(attr[:, idx] == 0.0)
    assert np.abs(attr).max() > 0
    # Efficiency still holds, against a baseline that keeps the masked fields as they are.
    cols = np.zeros(128, bool)
    for name, lo, hi in header_fields():
        cols[lo:hi] = name in masked
    h = torch.from_numpy(np.array(header, np.float32))
    base_h = torch.where(torch.from_numpy(cols), h, torch.full_like(h, 255.0))
    with torch.no_grad():
        base = torch.softmax(model(base_h, torch.zeros(2, 64)), dim=1).numpy()
    pred = probs.argmax(1)
    gap = probs[np.arange(2), pred] - base[np.arange(2), pred]
    np.testing.assert_allclose(attr.sum(axis=1), gap, atol=1e-5)


def test_amlhp_explain_command(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_model("amlhp", num_classes=2)
    art = tmp_path / "pkt"
    save_artifact(
        art,
        model,
        architecture="amlhp",
        config=model_kwargs("amlhp", num_classes=2),
        classes=["benign", "attack"],
        encoding={"payload_bytes": 64, "layout_version": "1", "mask_fields": ["ip.src", "ip.dst"]},
    )
    frames = [tcp_frame(b"x" * 10), udp_frame(b"dns", "192.168.1.10", "8.8.8.8")]
    pcap = write_pcap(tmp_path / "c.pcap", [Record(f, ts_ns=T0 + i) for i, f in enumerate(frames)])
    png = tmp_path / "pkt.png"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "amlhp.cli",
            "explain",
            str(pcap),
            "--model",
            str(art),
            "--samples",
            "2",
            "--png",
            str(png),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(docs) == 2
    assert docs[0]["label"] in {"benign", "attack"}
    assert not any(k.startswith("udp.") for k in docs[0]["attributions"])
    assert not any(k.startswith("tcp.") for k in docs[1]["attributions"])
    assert png.stat().st_size > 1000
