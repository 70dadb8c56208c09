"""Fingerprint rewrites during training, and caps shared among sources."""

from __future__ import annotations

import numpy as np
import torch

from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import IP_SLOT_LEN, EncoderConfig
from amlhp.model.augment import augment_batch, ipv6_twins
from amlhp.model.dataset import cap_rows
from tests.support import synth


def _encoded() -> tuple[torch.Tensor, torch.Tensor]:
    frames = [
        (1, synth.ethernet(synth.ipv4(synth.tcp(b"A" * 64, sport=51000, dport=1883), 6))),
        (1, synth.ethernet(synth.ipv4(synth.tcp(b"B" * 64, sport=80, dport=40000), 6))),
        (1, synth.ethernet(synth.ipv4(synth.udp(b"C" * 64, sport=5683, dport=5683), 17))),
    ] * 50
    batch = encode_batch(synth.raw_batch(frames), EncoderConfig())
    header = np.stack([np.frombuffer(h, np.uint8) for h in batch.column("header").to_pylist()])
    payload = np.stack([np.frombuffer(d, np.uint8) for d in batch.column("payload").to_pylist()])
    return torch.from_numpy(header.copy()), torch.from_numpy(payload.copy())


def _port(h: torch.Tensor, col: int) -> np.ndarray:
    return (h[:, col].to(torch.int64) * 256 + h[:, col + 1].to(torch.int64)).numpy()


def test_rewrites_touch_only_fingerprints_and_never_the_input() -> None:
    header, payload = _encoded()
    before_h, before_p = header.clone(), payload.clone()
    g = torch.Generator().manual_seed(0)
    h, p = augment_batch(header, payload, 1.0, g)
    assert torch.equal(header, before_h)  # copies: the training data stays as it was
    assert torch.equal(payload, before_p)
    tcp = np.arange(150) % 3 != 2
    udp = ~tcp
    # ephemeral ports move within the ephemeral range; service ports stay
    sport, dport = _port(h, 60), _port(h, 62)
    assert (sport[0::3] >= 32768).all()
    assert (sport[0::3] != 51000).any()
    assert (dport[0::3] == 1883).all()
    assert (sport[1::3] == 80).all()
    assert (dport[1::3] >= 32768).all()
    assert (dport[1::3] != 40000).any()
    assert (_port(h, 120)[udp] == 5683).all()
    assert torch.equal(h[udp, 60:120], before_h[udp, 60:120])  # no TCP slot to rewrite
    assert (_port(h, 74)[tcp] != _port(before_h, 74)[tcp]).any()  # windows
    # everything else of the header is untouched
    same = [c for c in range(128) if c not in (60, 61, 62, 63, 74, 75, 120, 121, 122, 123)]
    assert torch.equal(h[:, same], before_h[:, same])
    # payloads are cut: a prefix kept, the rest zero
    lengths = (p != 0).sum(dim=1)
    assert (lengths < 64).all()
    for row in range(150):
        n = int(lengths[row])
        assert torch.equal(p[row, :n], before_p[row, :n])


def test_no_rewrite_at_zero_probability() -> None:
    header, payload = _encoded()
    h, p = augment_batch(header, payload, 0.0, torch.Generator().manual_seed(0))
    assert h is header
    assert p is payload


def test_a_cap_shared_among_sources() -> None:
    labels = np.array([0] * 100 + [0] * 10 + [1] * 50)
    sources = np.array([0] * 100 + [1] * 10 + [0] * 50)
    rows = cap_rows(np.arange(160), labels, 40, seed=0, sources=sources)
    assert np.sum((labels[rows] == 0) & (sources[rows] == 0)) == 20  # half of 40
    assert np.sum((labels[rows] == 0) & (sources[rows] == 1)) == 10  # all it has
    assert np.sum(labels[rows] == 1) == 40  # one source: the whole cap
    plain = cap_rows(np.arange(160), labels, 40, seed=0)
    assert np.sum(labels[plain] == 0) == 40


def test_ipv6_twins_turn_only_plain_ipv4_tcp_udp_into_ipv6() -> None:
    """p=1: every IPv4 TCP/UDP row with a 20-byte header becomes IPv6 (0x6a: version 6,
    40-byte header), transport slots and payload kept; ICMP, IPv4 with options and a
    later fragment stay IPv4; the input is not changed; p=0 changes nothing."""
    frames = [
        (1, synth.ethernet(synth.ipv4(synth.tcp(b"A" * 8, sport=51000, dport=1883), 6))),
        (1, synth.ethernet(synth.ipv4(synth.udp(b"C" * 8, sport=5683, dport=5683), 17))),
        (1, synth.ethernet(synth.ipv4(b"\x08\x00\x00\x00\x00\x01\x00\x01", 1))),
        (1, synth.ethernet(synth.ipv4(synth.udp(b"D"), 17, options=b"\x01\x01\x01\x01"))),
        (1, synth.ethernet(synth.ipv4(b"E" * 16, 17, frag_offset=4, flags=0))),
    ]
    config = EncoderConfig(mask_fields=("ip.src", "ip.dst", "path", "checksums"))
    batch = encode_batch(synth.raw_batch(frames), config)
    header = torch.from_numpy(
        np.stack([np.frombuffer(h, np.uint8) for h in batch.column("header").to_pylist()]).copy()
    )
    before = header.clone()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(ipv6_twins(header, 0.0, config.mask_fields, g), before)
    twins = ipv6_twins(header, 1.0, config.mask_fields, g)
    assert torch.equal(header, before)
    assert twins[:, 0].tolist() == [0x6A, 0x6A, 0x45, 0x46, 0x45]
    assert torch.equal(twins[2:], before[2:])
    assert torch.equal(twins[:2, IP_SLOT_LEN:], before[:2, IP_SLOT_LEN:])
    assert twins[:2, 12:44].sum() == 0  # the masked IPv6 addresses
