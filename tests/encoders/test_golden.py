"""Golden tests: hand-built packets with every byte of h and d pinned, for both encoders.

Expected vectors are written from the layout rules (IP slot 0..59, TCP 60..119, UDP
120..127, 0xff where absent, addresses zeroed, d zero-padded), not from encoder output.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from amlhp.encoders import linktypes as lt
from amlhp.encoders.layout import EncoderConfig
from amlhp.encoders.reference import EncodedPacket
from tests.support import synth

Encoder = Callable[..., EncodedPacket]
FF = b"\xff"
MQTT_CONNECT = bytes.fromhex("101800044d5154540402003c000c6d6f73717075622d31323334")
TCP_OPTIONS = bytes.fromhex("020405b40402080a0001e2400000000001030307")  # MSS SACK TS NOP WS


def masked(ip_header: bytes) -> bytes:
    """The IP header with source and destination zeroed, as the default config does."""
    return ip_header[:12] + bytes(8) + ip_header[20:]


def pad(data: bytes, size: int, fill: bytes = FF) -> bytes:
    assert len(data) <= size
    return data + fill * (size - len(data))


def header(ip: bytes, tcp: bytes = b"", udp: bytes = b"") -> bytes:
    h = pad(ip, 60) + pad(tcp, 60) + pad(udp, 8)
    assert len(h) == 128
    return h


def payload(data: bytes, size: int = 64) -> bytes:
    return pad(data[:size], size, b"\x00")


def five_tuple(
    got: EncodedPacket,
) -> tuple[str | None, str | None, int | None, int | None, int | None]:
    """The clear 5-tuple an encoded packet carries beside its vectors."""
    return (got.src_ip, got.dst_ip, got.src_port, got.dst_port, got.proto)


def test_literal_tcp_syn_with_options(encoder: Encoder) -> None:
    """One packet with h and d written out as literal hex, nothing computed."""
    frame = bytes.fromhex(
        "001122334455667788990aab0800"  # Ethernet
        "4500003c1c4640004006b1e6c0a80164c0a80101"  # IPv4 192.168.1.100 -> 192.168.1.1
        "c3500050000003e800000000a002faf0d3ad0000"  # TCP 50000 -> 80 SYN, offset 10
        "020405b40402080a0001e2400000000001030307"  # options
    )
    got = encoder(lt.ETHERNET, frame, EncoderConfig())
    assert got.status == "ok"
    assert got.header is not None
    assert got.header.hex() == (
        "4500003c1c4640004006b1e60000000000000000"
        + "ff" * 40
        + "c3500050000003e800000000a002faf0d3ad0000"
        + "020405b40402080a0001e2400000000001030307"
        + "ff" * 20
        + "ff" * 8
    )
    assert got.payload == bytes(64)
    assert five_tuple(got) == ("192.168.1.100", "192.168.1.1", 50000, 80, 6)


def test_tcp_without_options(encoder: Encoder) -> None:
    seg = synth.tcp(MQTT_CONNECT, 49152, 1883)
    ip = synth.ipv4(seg, 6)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.status == "ok"
    assert got.header == header(masked(ip[:20]), tcp=seg[:20])
    assert got.payload == payload(MQTT_CONNECT)
    assert five_tuple(got) == ("192.168.1.10", "10.0.0.1", 49152, 1883, 6)


def test_tcp_with_options(encoder: Encoder) -> None:
    seg = synth.tcp(b"hello", options=TCP_OPTIONS)
    ip = synth.ipv4(seg, 6)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.header == header(masked(ip[:20]), tcp=seg[:40])
    assert got.header is not None
    assert got.header[100:120] == FF * 20
    assert got.payload == payload(b"hello")


def test_tcp_with_forty_bytes_of_options_fills_the_slot(encoder: Encoder) -> None:
    seg = synth.tcp(b"x", options=TCP_OPTIONS * 2)
    ip = synth.ipv4(seg, 6)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.header == header(masked(ip[:20]), tcp=seg[:60])
    assert got.payload == payload(b"x")


def test_udp(encoder: Encoder) -> None:
    dgram = synth.udp(b"\x12\x34\x01\x00" + b"q" * 100, 5353, 53)
    ip = synth.ipv4(dgram, 17, src="172.16.0.5", dst="8.8.8.8")
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.status == "ok"
    assert got.header == header(masked(ip[:20]), udp=dgram[:8])
    assert got.payload == (b"\x12\x34\x01\x00" + b"q" * 100)[:64]
    assert five_tuple(got) == ("172.16.0.5", "8.8.8.8", 5353, 53, 17)


def test_icmp_has_no_transport_slots_and_d_is_the_ip_payload(encoder: Encoder) -> None:
    body = synth.icmp_echo(b"abcdefgh")
    ip = synth.ipv4(body, 1)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.status == "ok"
    assert got.header == header(masked(ip[:20]))
    assert got.payload == payload(body)
    assert (got.src_port, got.dst_port, got.proto) == (None, None, 1)


def test_igmp_like_any_other_protocol(encoder: Encoder) -> None:
    body = bytes.fromhex("1600fa04efffff fa".replace(" ", ""))
    ip = synth.ipv4(body, 2, options=b"\x94\x04\x00\x00", ttl=1)  # router alert
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.header == header(masked(ip[:24]))
    assert got.payload == payload(body)


def test_ip_options(encoder: Encoder) -> None:
    options = b"\x07\x07\x04" + bytes(4) + b"\x00"  # record route, one slot, end of list
    seg = synth.tcp(b"data")
    ip = synth.ipv4(seg, 6, options=options)
    assert ip[0] == 0x47
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.status == "ok"
    assert got.header == header(masked(ip[:28]), tcp=seg[:20])
    assert got.header is not None
    assert got.header[28:60] == FF * 32
    assert got.payload == payload(b"data")


@pytest.mark.parametrize(
    "vlans",
    [
        [(0x8100, 100)],
        [(0x88A8, 10), (0x8100, 20)],
        [(0x9100, 1), (0x8100, 2)],
        [(0x8100, 1), (0x8100, 2), (0x8100, 3), (0x8100, 4)],
    ],
    ids=["802.1Q", "QinQ-88a8", "QinQ-9100", "four-tags"],
)
def test_vlan_tags_are_skipped(encoder: Encoder, vlans: list[tuple[int, int]]) -> None:
    seg = synth.tcp(b"vlan")
    ip = synth.ipv4(seg, 6)
    got = encoder(lt.ETHERNET, synth.ethernet(ip, vlans=vlans), EncoderConfig())
    assert got.status == "ok"
    assert got.header == header(masked(ip[:20]), tcp=seg[:20])
    assert got.payload == payload(b"vlan")


def test_five_vlan_tags_are_too_many(encoder: Encoder) -> None:
    frame = synth.ethernet(synth.ipv4(synth.tcp(), 6), vlans=[(0x8100, i) for i in range(5)])
    got = encoder(lt.ETHERNET, frame, EncoderConfig())
    assert got == EncodedPacket(status="too_many_vlan_tags")


def test_vlan_tag_cut_short_is_truncated_link(encoder: Encoder) -> None:
    frame = synth.ethernet(b"", vlans=[(0x8100, 5)])[:16]
    assert encoder(lt.ETHERNET, frame, EncoderConfig()).status == "truncated_link"


def test_ethernet_padding_is_not_payload(encoder: Encoder) -> None:
    seg = synth.tcp(b"", flags=0x10)  # a bare ACK: 40-byte IP packet in a 60-byte frame
    ip = synth.ipv4(seg, 6)
    frame = synth.ethernet(ip) + b"\xaa" * 6  # padding to the 60-byte minimum
    got = encoder(lt.ETHERNET, frame, EncoderConfig())
    assert got.header == header(masked(ip[:20]), tcp=seg)
    assert got.payload == bytes(64)


def test_total_length_zero_uses_the_captured_bytes(encoder: Encoder) -> None:
    """TCP segmentation offload leaves total length 0 in captures of outgoing packets."""
    seg = synth.tcp(b"offloaded")
    ip = synth.ipv4(seg, 6, total_length=0)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.status == "ok"
    assert got.payload == payload(b"offloaded")


def test_short_total_length_cuts_the_payload(encoder: Encoder) -> None:
    seg = synth.tcp(b"0123456789")
    ip = synth.ipv4(seg, 6, total_length=20 + 20 + 4)
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
    assert got.payload == payload(b"0123")


def test_payload_is_cut_to_p_and_p_is_configurable(encoder: Encoder) -> None:
    data = bytes(range(200))
    ip = synth.ipv4(synth.udp(data), 17)
    assert encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig()).payload == data[:64]
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig(payload_bytes=8))
    assert got.payload == data[:8]
    got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig(payload_bytes=300))
    assert got.payload == data + bytes(100)


class TestFragments:
    def test_first_fragment_with_transport_header_is_parsed(self, encoder: Encoder) -> None:
        seg = synth.tcp(b"A" * 32)
        ip = synth.ipv4(seg, 6, flags=0x1)  # MF, offset 0
        got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
        assert got.status == "ok"
        assert got.header == header(masked(ip[:20]), tcp=seg[:20])
        assert got.payload == payload(b"A" * 32)
        assert got.src_port == 49152

    def test_later_fragment_has_no_transport_slots(self, encoder: Encoder) -> None:
        body = b"B" * 80  # would look like a TCP header if parsed
        ip = synth.ipv4(body, 6, flags=0x0, frag_offset=185)
        got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
        assert got.status == "ok"
        assert got.header == header(masked(ip[:20]))
        assert got.payload == body[:64]
        assert (got.src_port, got.dst_port, got.proto) == (None, None, 6)

    def test_udp_later_fragment(self, encoder: Encoder) -> None:
        body = b"C" * 10
        ip = synth.ipv4(body, 17, flags=0x1, frag_offset=1)
        got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
        assert got.header == header(masked(ip[:20]))
        assert got.payload == payload(body)

    def test_tiny_first_fragment_is_encoded_like_a_fragment(self, encoder: Encoder) -> None:
        body = synth.tcp()[:8]  # ports and sequence number only
        ip = synth.ipv4(body, 6, flags=0x1)
        got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
        assert got.status == "ok"
        assert got.header == header(masked(ip[:20]))
        assert got.payload == payload(body)

    def test_same_cut_without_more_fragments_is_truncated(self, encoder: Encoder) -> None:
        ip = synth.ipv4(synth.tcp()[:8], 6, flags=0x2)
        got = encoder(lt.ETHERNET, synth.ethernet(ip), EncoderConfig())
        assert got.status == "truncated_transport"
        assert got.header is None
        assert got.payload is None
        assert (got.src_ip, got.proto, got.src_port) == ("192.168.1.10", 6, None)


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (synth.ethernet(b"")[:10], "truncated_link"),
        (b"", "truncated_link"),
        (synth.ethernet(b""), "truncated_ip_header"),
        (synth.ethernet(synth.ipv4(b"", 6)[:15]), "truncated_ip_header"),
        (synth.ethernet(synth.ipv4(b"", 6, options=b"\x01" * 4)[:20]), "truncated_ip_header"),
        (synth.ethernet(synth.ipv4(synth.tcp(), 6, ihl=4)), "bad_ihl"),
        (synth.ethernet(synth.ipv4(synth.tcp(), 6, version=6)), "bad_ip_version"),
        (synth.ethernet(synth.ipv4(synth.tcp(), 6)[:30]), "truncated_transport"),
        (synth.ethernet(synth.ipv4(synth.tcp(options=TCP_OPTIONS)[:30], 6)), "truncated_transport"),
        (synth.ethernet(synth.ipv4(synth.tcp(data_offset=4), 6)), "bad_tcp_offset"),
        (synth.ethernet(synth.ipv4(synth.udp()[:6], 17)), "truncated_transport"),
        (synth.ethernet(bytes(28), synth.ETHERTYPE_ARP), "bad_arp"),
        (synth.ethernet(bytes(46), 0x002E), "non_ip"),  # 802.3 length field + LLC
    ],
    ids=[
        "ethernet-cut",
        "empty",
        "no-ip-byte",
        "ip-15-bytes",
        "ip-options-cut",
        "ihl-4",
        "version-6-in-0800",
        "tcp-cut",
        "tcp-options-cut",
        "tcp-offset-4",
        "udp-cut",
        "arp",
        "llc",
    ],
)
def test_reasons(encoder: Encoder, frame: bytes, status: str) -> None:
    got = encoder(lt.ETHERNET, frame, EncoderConfig())
    assert got.status == status
    assert got.header is None
    assert got.payload is None
    if status in ("truncated_transport", "bad_tcp_offset"):
        assert got.src_ip == "192.168.1.10"
        assert got.dst_ip == "10.0.0.1"
    else:
        assert got.src_ip is None
        assert got.dst_ip is None
        assert got.proto is None


class TestLinkTypes:
    seg = synth.tcp(b"link")
    ip = synth.ipv4(seg, 6)
    expected = header(masked(ip[:20]), tcp=seg[:20])

    @pytest.mark.parametrize(
        ("linktype", "frame"),
        [
            (lt.LINUX_SLL, synth.sll(ip)),
            (lt.LINUX_SLL2, synth.sll2(ip)),
            (lt.NULL, synth.loopback(ip, byteorder="little")),
            (lt.NULL, synth.loopback(ip, byteorder="big")),
            (lt.LOOP, synth.loopback(ip, byteorder="big")),
            (lt.LOOP, synth.loopback(ip, byteorder="little")),
            (lt.RAW, ip),
            (lt.RAW_DLT12, ip),
            (lt.RAW_DLT14, ip),
            (lt.IPV4, ip),
        ],
        ids=[
            "sll",
            "sll2",
            "null-le",
            "null-be",
            "loop-be",
            "loop-le",
            "raw",
            "raw12",
            "raw14",
            "ipv4",
        ],
    )
    def test_ipv4_over(self, encoder: Encoder, linktype: int, frame: bytes) -> None:
        got = encoder(linktype, frame, EncoderConfig())
        assert got.status == "ok"
        assert got.header == self.expected
        assert got.payload == payload(b"link")

    def test_sll_with_vlan_tag(self, encoder: Encoder) -> None:
        frame = synth.sll(b"\x00\x05\x08\x00" + self.ip, ethertype=0x8100)
        assert encoder(lt.LINUX_SLL, frame, EncoderConfig()).header == self.expected

    @pytest.mark.parametrize(
        ("linktype", "frame", "status"),
        [
            (lt.LINUX_SLL, synth.sll(bytes(28), synth.ETHERTYPE_ARP), "bad_arp"),
            (lt.LINUX_SLL, synth.sll(b"")[:12], "truncated_link"),
            (lt.LINUX_SLL2, synth.sll2(b"")[:19], "truncated_link"),
            (lt.NULL, synth.loopback(b"\x60" + bytes(39), family=17), "non_ip"),
            (lt.NULL, b"\x02\x00", "truncated_link"),
            (lt.RAW, b"\x50" + bytes(39), "bad_ip_version"),
            (lt.RAW, b"", "truncated_ip_header"),
            (lt.IPV4, b"\x60" + bytes(39), "bad_ip_version"),
            (lt.IPV6, b"\x45" + bytes(39), "bad_ip_version"),
            (147, b"\x45" + bytes(39), "unknown_linktype"),
            (lt.UNKNOWN, b"\x45" + bytes(39), "unknown_linktype"),
        ],
    )
    def test_rejects(self, encoder: Encoder, linktype: int, frame: bytes, status: str) -> None:
        assert encoder(linktype, frame, EncoderConfig()) == EncodedPacket(status=status)


class TestMasking:
    seg = synth.tcp(b"m", options=TCP_OPTIONS)
    ip = synth.ipv4(seg, 6, options=b"\x94\x04\x00\x00")
    frame = synth.ethernet(ip)
    dgram = synth.udp(b"u")
    udp_frame = synth.ethernet(synth.ipv4(dgram, 17))

    def test_no_mask_keeps_the_addresses(self, encoder: Encoder) -> None:
        got = encoder(lt.ETHERNET, self.frame, EncoderConfig(mask_fields=()))
        assert got.header == header(self.ip[:24], tcp=self.seg[:40])

    def test_ports_ttl_and_checksums(self, encoder: Encoder) -> None:
        config = EncoderConfig(mask_fields=("ports", "ip.ttl", "checksums", "ip.src"))
        got = encoder(lt.ETHERNET, self.frame, config)
        ip = bytearray(self.ip[:24])
        ip[8] = 0  # ttl
        ip[10:12] = b"\x00\x00"  # checksum
        ip[12:16] = bytes(4)  # src; dst kept
        tcp = bytearray(self.seg[:40])
        tcp[0:4] = bytes(4)  # ports
        tcp[16:18] = b"\x00\x00"  # checksum
        assert got.header == header(bytes(ip), tcp=bytes(tcp))

    def test_options_masks_only_the_bytes_present(self, encoder: Encoder) -> None:
        got = encoder(
            lt.ETHERNET, self.frame, EncoderConfig(mask_fields=("ip.options", "tcp.options"))
        )
        assert got.header == header(self.ip[:20] + bytes(4), tcp=self.seg[:20] + bytes(20))

    def test_tcp_fields_leave_a_udp_packet_alone(self, encoder: Encoder) -> None:
        config = EncoderConfig(mask_fields=("tcp.sport", "tcp.options", "ip.dst"))
        got = encoder(lt.ETHERNET, self.udp_frame, config)
        ip = synth.ipv4(self.dgram, 17)
        assert got.header == header(ip[:16] + bytes(4), udp=self.dgram[:8])

    def test_udp_ports(self, encoder: Encoder) -> None:
        got = encoder(lt.ETHERNET, self.udp_frame, EncoderConfig(mask_fields=("udp.dport",)))
        ip = synth.ipv4(self.dgram, 17)
        assert got.header == header(ip[:20], udp=self.dgram[:2] + b"\x00\x00" + self.dgram[4:8])
        assert got.dst_port == 53  # the clear 5-tuple is never masked
