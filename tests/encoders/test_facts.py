"""The packet facts the behaviour detectors read, from hand-built packets through the fast
encoder: TCP flags, payload length, DNS query names, Modbus function codes, ICMP types."""

from __future__ import annotations

import socket
import struct

import pyarrow as pa

from amlhp.encoders.facts import dns_name, packet_facts
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.linktypes import ETHERNET
from tests.support.synth import (
    ETHERTYPE_ARP,
    ETHERTYPE_IPV6,
    arp,
    ethernet,
    icmp_echo,
    icmpv6,
    ipv4,
    ipv6,
    ipv6_extension,
    raw_batch,
    tcp,
    udp,
)


def dns_query(name: str, qid: int = 0x1234, response: bool = False) -> bytes:
    flags = 0x8180 if response else 0x0100
    labels = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + labels + b"\x00\x01\x00\x01"


def modbus(fc: int, unit: int = 1) -> bytes:
    pdu = bytes([fc]) + b"\x00\x01\x00\x01"
    return struct.pack("!HHHB", 7, 0, len(pdu) + 1, unit) + pdu


def facts(frames: list[bytes], config: EncoderConfig | None = None) -> dict[str, list[object]]:
    raw = raw_batch([(ETHERNET, f) for f in frames])
    encoded = encode_batch(raw, config) if config else encode_batch(raw)
    return {k: v.to_pylist() for k, v in packet_facts(encoded).items()}


def test_tcp_flags_and_payload_length() -> None:
    syn = ethernet(ipv4(tcp(flags=0x02, dport=22), 6))
    data = ethernet(ipv4(tcp(b"x" * 300, flags=0x18, options=b"\x01" * 12), 6))
    got = facts([syn, data])
    assert got["tcp_flags"] == [0x02, 0x18]
    assert got["payload_len"] == [0, 300]


def test_dns_query_names_whole_cut_and_responses() -> None:
    short = ethernet(ipv4(udp(dns_query("a.example.com")), 17))
    long_label = "q" * 60
    long = ethernet(ipv4(udp(dns_query(f"{long_label}.t.example.org")), 17))
    answer = ethernet(ipv4(udp(dns_query("a.example.com", response=True), dport=53), 17))
    other_port = ethernet(ipv4(udp(dns_query("a.example.com"), dport=5353), 17))
    got = facts([short, long, answer, other_port])["dns_qname"]
    assert got[0] == "a.example.com"
    # P = 64 payload bytes: 12 of header, then the name as far as it goes
    cut = str(got[1])
    assert cut.startswith("q" * 40)
    assert cut.endswith("...")
    assert got[2:] == [None, None]


def test_dns_name_refuses_pointers_and_empty_names() -> None:
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    assert dns_name(header + b"\xc0\x0c") is None
    assert dns_name(header + b"\x00") is None
    assert dns_name(header[:8]) is None


def test_modbus_function_codes_both_ways_and_icmp_types() -> None:
    request = ethernet(ipv4(tcp(modbus(5), sport=40000, dport=502), 6))
    exception = ethernet(ipv4(tcp(modbus(0x85), sport=502, dport=40000), 6))
    not_modbus = ethernet(ipv4(tcp(modbus(5), sport=40000, dport=503), 6))
    ping = ethernet(ipv4(icmp_echo(), 1))
    got = facts([request, exception, not_modbus, ping])
    assert got["modbus_fc"] == [5, 0x85, None, None]
    assert got["icmp_type"] == [None, None, None, 8]
    assert got["tcp_flags"][3] is None


def test_ipv6_packets_give_the_same_facts() -> None:
    """The aligned IPv6 slot keeps length, protocol and header length where IPv4 has them."""
    hop_by_hop = ipv6_extension(0, 6, bytes.fromhex("050200000100"))
    syn = ethernet(ipv6(tcp(b"x" * 300, flags=0x02, dport=22), 0, extensions=hop_by_hop),
                   ETHERTYPE_IPV6)  # fmt: skip
    query = ethernet(ipv6(udp(dns_query("a.example.com")), 17), ETHERTYPE_IPV6)
    modbus_request = ethernet(ipv6(tcp(modbus(6), dport=502), 6), ETHERTYPE_IPV6)
    ping = ethernet(ipv6(icmpv6(128), 58), ETHERTYPE_IPV6)
    unreachable = ethernet(ipv6(icmpv6(1, 4, bytes(8)), 58), ETHERTYPE_IPV6)
    got = facts([syn, query, modbus_request, ping, unreachable])
    assert got["tcp_flags"] == [0x02, None, 0x18, None, None]
    assert got["payload_len"] == [300, len(dns_query("a.example.com")), 12, 12, 12]
    assert got["dns_qname"] == [None, "a.example.com", None, None, None]
    assert got["modbus_fc"] == [None, None, 6, None, None]
    assert got["icmp_type"] == [None, None, None, 128, 1]


def test_masked_fields_read_as_null_not_zero() -> None:
    frame = ethernet(ipv4(tcp(b"abc", flags=0x12), 6))
    got = facts([frame], EncoderConfig(mask_fields=("tcp.offset", "ip.len")))
    assert got["tcp_flags"] == [None]
    assert got["payload_len"] == [None]


def test_an_empty_batch_has_empty_columns() -> None:
    raw = raw_batch([])
    out = packet_facts(encode_batch(raw))
    assert all(isinstance(v, pa.Array) and len(v) == 0 for v in out.values())


def test_arp_facts_come_from_the_encoder_also_in_a_chunked_table() -> None:
    """The worker builds verdicts from a table of several encoded batches."""
    frames = [
        ethernet(arp(2, "02:00:00:00:00:07", "10.0.0.7"), ETHERTYPE_ARP),
        ethernet(ipv4(tcp(), 6)),
    ]
    batches = [encode_batch(raw_batch([(ETHERNET, f)])) for f in frames]
    got = packet_facts(pa.Table.from_batches(batches))
    assert all(isinstance(v, pa.Array) for v in got.values())
    assert got["arp_op"].to_pylist() == [2, None]
    assert got["arp_mac"].to_pylist() == ["02:00:00:00:00:07", None]


def test_neighbour_advertisements_of_their_own_source_bind_like_arp() -> None:
    """An NA whose target is its source and whose first option is the target link-layer
    address reads as an ARP reply with that MAC; an NA for another address (a proxy), one
    without the option, a solicitation and an NA in a chunked table's second batch are
    handled as the docstring says."""

    def advert(src: str, target: str, option: bytes) -> bytes:
        body = b"\x60\x00\x00\x00" + socket.inet_pton(socket.AF_INET6, target) + option
        return ethernet(ipv6(icmpv6(136, 0, body), 58, src=src, dst="ff02::1"), ETHERTYPE_IPV6)

    tlla = bytes([2, 1]) + bytes.fromhex("027700000066")
    frames = [
        advert("fd77::1", "fd77::1", tlla),  # the spoofer's claim (or the owner's)
        advert("fe80::1", "fd77::1", tlla),  # for another address: not read
        advert("fd77::1", "fd77::1", b""),  # no option
        advert("fd77::1", "fd77::1", bytes([1, 1]) + bytes(6)),  # source, not target, LLA
        ethernet(ipv6(icmpv6(135, 0, bytes(4) + bytes(16) + tlla), 58), ETHERTYPE_IPV6),
        ethernet(arp(2, "02:00:00:00:00:07", "10.0.0.7"), ETHERTYPE_ARP),
    ]
    got = facts(frames)
    assert got["arp_op"] == [2, None, None, None, None, 2]
    assert got["arp_mac"] == ["02:77:00:00:00:66", None, None, None, None, "02:00:00:00:00:07"]
    assert got["icmp_type"][:5] == [136, 136, 136, 136, 135]
    batches = [encode_batch(raw_batch([(ETHERNET, f)])) for f in frames[-1:] + frames[:1]]
    chunked = packet_facts(pa.Table.from_batches(batches))
    assert chunked["arp_mac"].to_pylist() == ["02:00:00:00:00:07", "02:77:00:00:00:66"]
