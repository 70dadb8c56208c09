"""Labels by marker address, the labels file, the capture reader and the merge."""

from __future__ import annotations

import struct
from collections import Counter
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amlhp.lab.exceptions import LabError
from amlhp.lab.labels import (
    CONFLICT,
    UNLABELLED,
    Labeler,
    MarkerRule,
    label_by_rules,
    read_rules,
)
from amlhp.lab.merge import merge_files
from amlhp.lab.pcapscan import PcapTail, scan
from amlhp.lab.runner import build_labeler
from amlhp.lab.scenarios import ATTACKS, BENIGN
from amlhp.lab.topology import Topology


def ip(text: str) -> int:
    return int(IPv4Address(text))


def frame(src: str, dst: str, payload: bytes = b"x" * 10) -> bytes:
    """An Ethernet + IPv4 + UDP frame as tcpdump writes on lo."""
    udp = struct.pack("!HHHH", 1234, 80, 8 + len(payload), 0) + payload
    iph = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
        IPv4Address(src).packed, IPv4Address(dst).packed,
    )  # fmt: skip
    return b"\0" * 12 + b"\x08\x00" + iph + udp


def pcap(frames: list[tuple[int, bytes]]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)
    for ts_us, data in frames:
        out += struct.pack("<IIII", ts_us // 1_000_000, ts_us % 1_000_000, len(data), len(data))
        out += data
    return out


def test_marker_addresses_label_both_directions_and_the_rest_is_benign() -> None:
    labeler = build_labeler(Topology())
    assert labeler.label(ip("127.66.0.1"), ip("127.20.0.1")) == "dos_synflood"
    assert labeler.label(ip("127.20.0.1"), ip("127.66.0.1")) == "dos_synflood"
    assert labeler.label(ip("127.0.0.1"), ip("127.20.0.4")) == "ssh_bruteforce"
    assert labeler.label(ip("127.20.0.3"), ip("127.0.0.1")) == "mqtt_bruteforce"
    assert labeler.label(ip("127.10.0.5"), ip("127.20.0.1")) == BENIGN
    assert labeler.label(ip("127.66.0.1"), ip("127.66.0.2")) == CONFLICT
    assert labeler.label(ip("127.10.0.1"), ip("127.66.0.2")) == CONFLICT
    assert labeler.label(ip("127.0.0.1"), ip("127.20.0.1")) == UNLABELLED
    assert labeler.classes == [BENIGN, *(s.label for s in ATTACKS)]
    assert len(labeler.classes) == 23
    # the second round: dedicated victims of tools that cannot bind a source, and the
    # attacker's servers that the compromised device talks to
    assert labeler.label(ip("127.0.0.1"), ip("127.20.0.7")) == "telnet_bruteforce"
    assert labeler.label(ip("127.20.0.5"), ip("127.66.0.20")) == "dns_tunnel"
    assert labeler.label(ip("127.0.0.1"), ip("127.20.0.12")) == "modbus_attack"
    assert labeler.label(ip("127.20.0.11"), ip("127.66.0.14")) == "c2_reverse_shell"
    assert labeler.label(ip("127.66.0.17"), ip("127.20.0.11")) == "exfiltration"
    assert labeler.label(ip("127.66.0.11"), ip("127.20.3.7")) == "botnet_scan"


def test_a_marker_cannot_belong_to_two_classes_or_to_the_benign_network() -> None:
    a = IPv4Address("127.66.0.9")
    with pytest.raises(LabError):
        Labeler([MarkerRule("x", a), MarkerRule("y", a)], default=BENIGN)
    with pytest.raises(LabError):
        Labeler(
            [MarkerRule("x", IPv4Address("127.10.0.3"))],
            default=BENIGN,
            default_networks=[IPv4Network("127.10.0.0/16")],
        )


lab_ips = st.sampled_from(
    ["127.10.0.1", "127.10.0.12", "127.20.0.1", "127.20.0.2", "127.20.0.3", "127.20.0.4",
     "127.0.0.1", *(f"127.66.0.{i}" for i in range(1, 10))]
)  # fmt: skip


@settings(max_examples=300)
@given(src=lab_ips, dst=lab_ips)
def test_the_labels_file_says_what_the_labeler_does(
    tmp_path_factory: pytest.TempPathFactory, src: str, dst: str
) -> None:
    labeler = build_labeler(Topology())
    path = tmp_path_factory.mktemp("labels") / "labels.yaml"
    labeler.write_yaml(path, comment="test")
    classes, rules = read_rules(path)
    assert classes == labeler.classes
    expected = labeler.label(ip(src), ip(dst))
    got = label_by_rules(rules, "any_capture.pcap", ip(src), ip(dst))
    if expected == CONFLICT:  # two claims: the file's first-match order decides
        assert got in labeler.classes
    elif expected == UNLABELLED:  # no class claims it (the lab never makes such packets)
        assert got is None
    else:
        assert got == expected
    assert label_by_rules(rules, "notes.txt", ip(src), ip(dst)) is None


def test_the_reader_waits_for_a_record_still_being_written(tmp_path: Path) -> None:
    data = pcap(
        [
            (1_000_000, frame("127.66.0.1", "127.20.0.1")),
            (2_000_000, frame("127.10.0.1", "127.20.0.1")),
        ]
    )
    path = tmp_path / "growing.pcap"
    path.write_bytes(data[:10])
    tail = PcapTail(path)
    assert list(tail.read()) == []  # not even the file header yet
    path.write_bytes(data[: len(data) - 5])  # first record whole, second cut short
    first = list(tail.read())
    assert [(s, d) for _, s, d, _ in first] == [(ip("127.66.0.1"), ip("127.20.0.1"))]
    path.write_bytes(data)
    second = list(tail.read())
    assert [(s, d) for _, s, d, _ in second] == [(ip("127.10.0.1"), ip("127.20.0.1"))]
    assert second[0][0] == 2_000_000_000
    assert list(tail.read()) == []
    assert tail.packets == 2


def test_merge_interleaves_by_time_and_keeps_every_record(tmp_path: Path) -> None:
    a = tmp_path / "a.pcap"
    b = tmp_path / "b.pcap"
    a.write_bytes(pcap([(t, frame("127.66.0.1", "127.20.0.1")) for t in (1, 5, 9)]))
    b.write_bytes(pcap([(t, frame("127.10.0.1", "127.20.0.1")) for t in (2, 3, 10)]))
    out = tmp_path / "merged.pcap"
    assert merge_files([a, b], out) == 6
    packets = list(scan(out))
    assert [ts // 1000 for ts, *_ in packets] == [1, 2, 3, 5, 9, 10]
    counts = build_labeler(Topology()).count(packets)
    assert counts == Counter({"dos_synflood": 3, BENIGN: 3})


def test_a_merge_with_a_snap_length_keeps_headers_and_wire_lengths(tmp_path: Path) -> None:
    from amlhp.encoders.readers import iter_packets

    big = frame("127.66.0.1", "127.20.0.1", b"y" * 3000)
    small = frame("127.10.0.1", "127.20.0.1")
    a = tmp_path / "a.pcap"
    a.write_bytes(pcap([(1, big), (3, small)]))
    out = tmp_path / "cut.pcap"
    assert merge_files([a], out, snaplen=256) == 2
    assert struct.unpack_from("<I", out.read_bytes(), 16)[0] == 256  # the header says so
    packets = list(iter_packets(out))
    assert [len(p.data) for p in packets] == [256, len(small)]
    assert [p.wire_len for p in packets] == [len(big), len(small)]
    assert packets[0].data == big[:256]
    with pytest.raises(LabError, match="snap length"):
        merge_files([a], tmp_path / "x.pcap", snaplen=40)
