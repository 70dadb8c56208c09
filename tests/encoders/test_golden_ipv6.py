"""Golden tests for IPv6: hand-built packets with every byte of h and d pinned, both encoders.

Expected network slots are written here from the layout table of
:mod:`amlhp.encoders.layout` (version and header length, traffic class, 40 + payload
length, fragment identification and offset, hop limit, upper-layer protocol, no checksum,
the addresses, flow label, extension bits and bytes), not from encoder output.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pytest

from amlhp.encoders import fast_ipv6
from amlhp.encoders import linktypes as lt
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import IP_SLOT_LEN, EncoderConfig
from amlhp.encoders.reference import EncodedPacket, encode_packet
from tests.support import synth
from tests.support.synth import raw_batch

Encoder = Callable[..., EncodedPacket]
FF = b"\xff"
SRC, DST = "fd00::10", "fd00::1"
HBH, ROUTING, FRAGMENT, DSTOPTS, AUTH, NO_NEXT = 0, 43, 44, 60, 51, 59
ETHERTYPE = synth.ETHERTYPE_IPV6
ROUTER_ALERT = bytes.fromhex("050200000100")  # hop-by-hop option: router alert (MLD)


def pad(data: bytes, size: int) -> bytes:
    assert len(data) <= size
    return data + FF * (size - len(data))


def slot(
    *,
    header_len: int = 40,
    traffic_class: int = 0,
    payload_length: int,
    ident: int = 0,
    frag: int = 0,
    hop_limit: int = 64,
    upper: int,
    flow: int = 0,
    present: int = 0,
    extensions: bytes = b"",
    masked: bool = True,
) -> bytes:
    """The 60-byte network slot of an IPv6 packet, byte by byte from the layout table."""
    out = bytes([0x60 | min(header_len, 60) // 4, traffic_class])
    out += struct.pack("!HHH", min(40 + payload_length, 0xFFFF), ident, frag)
    out += bytes([hop_limit, upper]) + FF * 2
    if masked:
        out += bytes(32)
    else:
        out += socket.inet_pton(socket.AF_INET6, SRC) + socket.inet_pton(socket.AF_INET6, DST)
    out += struct.pack("!I", flow)[1:] + bytes([present]) + extensions[:12]
    assert len(out) <= 60
    return pad(out, 60)


def header(ip: bytes, tcp: bytes = b"", udp: bytes = b"") -> bytes:
    return pad(ip, 60) + pad(tcp, 60) + pad(udp, 8)


def payload(data: bytes, size: int = 64) -> bytes:
    return data[:size] + bytes(max(0, size - len(data)))


class TestTransport:
    def test_tcp_every_byte(self, encoder: Encoder) -> None:
        seg = synth.tcp(b"hello6", sport=40000, dport=8883)
        packet = synth.ipv6(seg, 6, traffic_class=0xB8, flow=0x12345, hop_limit=57)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        want_ip = slot(
            traffic_class=0xB8, payload_length=len(seg), hop_limit=57, upper=6, flow=0x12345
        )
        assert got.status == "ok"
        assert got.header == header(want_ip, tcp=seg[:20])
        assert got.header[:12].hex() == "6ab8" + f"{40 + len(seg):04x}" + "00000000" + "3906ffff"
        assert got.payload == payload(b"hello6")
        assert (got.src_ip, got.dst_ip, got.src_port, got.dst_port, got.proto) == (
            SRC,
            DST,
            40000,
            8883,
            6,
        )

    def test_length_near_the_limit_saturates(self, encoder: Encoder) -> None:
        """A snapped packet whose payload length says 65,530: 40 + that does not fit the
        16-bit length, which keeps 0xffff (no wrap-around)."""
        seg = synth.tcp(b"big")
        packet = synth.ipv6(seg, 6, payload_length=65_530)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        assert got.header is not None
        assert got.header[2:4] == FF * 2

    def test_udp_with_every_walked_extension(self, encoder: Encoder) -> None:
        dgram = synth.udp(b"coap")
        chain = (
            synth.ipv6_extension(HBH, DSTOPTS, ROUTER_ALERT)
            + synth.ipv6_extension(DSTOPTS, ROUTING, b"\x01\x02" + bytes(2))
            + synth.ipv6_extension(ROUTING, AUTH, bytes([0, 0]) + bytes(4) + bytes(16))
            + synth.ipv6_extension(AUTH, 17, bytes(2) + bytes(8))
        )
        packet = synth.ipv6(dgram, HBH, extensions=chain)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        want_ip = slot(
            header_len=40 + len(chain),
            payload_length=len(chain) + len(dgram),
            upper=17,
            present=0x01 | 0x02 | 0x08 | 0x10,
            extensions=chain,
        )
        assert got.status == "ok"
        assert len(chain) == 8 + 8 + 24 + 12
        assert got.header == header(want_ip, udp=dgram[:8])
        assert got.header[0] == 0x60 | 15  # 92 bytes of network header: capped at 60
        assert got.payload == payload(b"coap")
        assert got.proto == 17

    def test_icmpv6_has_no_transport_slot(self, encoder: Encoder) -> None:
        message = synth.icmpv6(135, 0, bytes(4) + socket.inet_pton(socket.AF_INET6, DST))
        packet = synth.ipv6(message, 58, hop_limit=255)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        assert got.header == header(slot(payload_length=len(message), upper=58, hop_limit=255))
        assert got.payload == payload(message)
        assert (got.proto, got.src_port, got.dst_port) == (58, None, None)

    def test_no_next_header(self, encoder: Encoder) -> None:
        frame = synth.ethernet(synth.ipv6(b"", NO_NEXT), ETHERTYPE)
        got = encoder(lt.ETHERNET, frame, EncoderConfig())
        assert got.header == header(slot(payload_length=0, upper=NO_NEXT))
        assert got.payload == bytes(64)

    def test_ethernet_padding_is_not_payload(self, encoder: Encoder) -> None:
        dgram = synth.udp(b"ab")
        frame = synth.ethernet(synth.ipv6(dgram, 17), ETHERTYPE) + b"\x99" * 6
        got = encoder(lt.ETHERNET, frame, EncoderConfig())
        assert got.header == header(slot(payload_length=len(dgram), upper=17), udp=dgram[:8])
        assert got.payload == payload(b"ab")

    def test_zero_payload_length_uses_the_captured_bytes(self, encoder: Encoder) -> None:
        seg = synth.tcp(b"offloaded")
        packet = synth.ipv6(seg, 6, payload_length=0)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        assert got.header == header(slot(payload_length=0, upper=6), tcp=seg[:20])
        assert got.payload == payload(b"offloaded")


class TestFragments:
    data = synth.udp(b"x" * 40)

    def test_first_fragment_keeps_its_transport(self, encoder: Encoder) -> None:
        ext = synth.ipv6_extension(FRAGMENT, 17, offset=0, more=True, ident=0xAABBCCDD)
        packet = synth.ipv6(self.data, FRAGMENT, extensions=ext)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        want_ip = slot(
            header_len=48,
            payload_length=8 + len(self.data),
            ident=0xCCDD,
            frag=0x2000,
            upper=17,
            present=0x04,
            extensions=ext,
        )
        assert got.header == header(want_ip, udp=self.data[:8])
        assert got.payload == payload(b"x" * 40)

    def test_later_fragment_is_all_payload(self, encoder: Encoder) -> None:
        ext = synth.ipv6_extension(FRAGMENT, 6, offset=185, more=False, ident=7)
        packet = synth.ipv6(b"later bytes", FRAGMENT, extensions=ext)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        want_ip = slot(
            header_len=48,
            payload_length=8 + 11,
            ident=7,
            frag=185,
            upper=6,
            present=0x04,
            extensions=ext,
        )
        assert got.status == "ok"
        assert got.header == header(want_ip)
        assert got.payload == payload(b"later bytes")
        assert (got.proto, got.src_port) == (6, None)

    def test_cut_transport_in_a_first_fragment_is_a_fragment(self, encoder: Encoder) -> None:
        ext = synth.ipv6_extension(FRAGMENT, 6, offset=0, more=True)
        packet = synth.ipv6(synth.tcp()[:12], FRAGMENT, extensions=ext)
        got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
        assert got.status == "ok"
        assert got.header is not None
        assert got.header[60:] == FF * 68
        assert got.payload == payload(synth.tcp()[:12])


def _chain(count: int, upper: int = 17) -> bytes:
    out = b""
    for i in range(count):
        out += synth.ipv6_extension(DSTOPTS, DSTOPTS if i < count - 1 else upper)
    return out


@pytest.mark.parametrize(
    ("frame", "status"),
    [
        (synth.ethernet(b"", ETHERTYPE), "truncated_ip_header"),
        (synth.ethernet(synth.ipv6(b"", 17)[:39], ETHERTYPE), "truncated_ip_header"),
        (synth.ethernet(synth.ipv6(synth.udp(), 17, version=4), ETHERTYPE), "bad_ip_version"),
        (
            synth.ethernet(synth.ipv6(b"", DSTOPTS, extensions=_chain(1))[:47], ETHERTYPE),
            "truncated_ip_header",
        ),
        (
            synth.ethernet(
                synth.ipv6(b"", HBH, extensions=synth.ipv6_extension(HBH, 17, bytes(30)))[:60],
                ETHERTYPE,
            ),
            "truncated_ip_header",
        ),
        (
            synth.ethernet(synth.ipv6(synth.udp(), DSTOPTS, extensions=_chain(9)), ETHERTYPE),
            "long_ipv6_extensions",
        ),
        (
            synth.ethernet(
                synth.ipv6(b"", HBH, extensions=synth.ipv6_extension(HBH, 17, bytes(300))),
                ETHERTYPE,
            ),
            "long_ipv6_extensions",
        ),
        (synth.ethernet(synth.ipv6(synth.tcp()[:15], 6), ETHERTYPE), "truncated_transport"),
        (synth.ethernet(synth.ipv6(synth.tcp(data_offset=4), 6), ETHERTYPE), "bad_tcp_offset"),
        (synth.ethernet(synth.ipv6(synth.udp()[:5], 17), ETHERTYPE), "truncated_transport"),
        (synth.ethernet(bytes(28), synth.ETHERTYPE_ARP), "bad_arp"),
        (synth.ethernet(bytes(46), 0x88CC), "non_ip"),  # LLDP
    ],
    ids=[
        "no-byte",
        "base-39-bytes",
        "version-4-in-86dd",
        "extension-length-cut",
        "extension-body-cut",
        "nine-extensions",
        "extensions-over-256-bytes",
        "tcp-cut",
        "tcp-offset-4",
        "udp-cut",
        "arp",
        "lldp",
    ],
)
def test_reasons(encoder: Encoder, frame: bytes, status: str) -> None:
    got = encoder(lt.ETHERNET, frame, EncoderConfig())
    assert got.status == status
    assert (got.header, got.payload) == (None, None)
    if status in ("truncated_transport", "bad_tcp_offset"):
        assert (got.src_ip, got.dst_ip, got.src_port) == (SRC, DST, None)
    else:
        assert (got.src_ip, got.proto) == (None, None)


def test_eight_extensions_are_walked(encoder: Encoder) -> None:
    chain = _chain(8)
    packet = synth.ipv6(synth.udp(b"8"), DSTOPTS, extensions=chain)
    got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
    assert got.status == "ok"
    assert got.header is not None
    assert (got.header[9], got.header[47], got.proto) == (17, 0x08, 17)


LINK_SEGMENT = synth.tcp(b"link6")
LINK_PACKET = synth.ipv6(LINK_SEGMENT, 6)


class TestLinkTypes:
    seg = LINK_SEGMENT
    ip = LINK_PACKET
    expected = header(slot(payload_length=len(seg), upper=6), tcp=seg[:20])

    @pytest.mark.parametrize(
        ("linktype", "frame"),
        [
            (lt.LINUX_SLL, synth.sll(ip, ETHERTYPE)),
            (lt.LINUX_SLL2, synth.sll2(ip, ETHERTYPE)),
            (lt.ETHERNET, synth.ethernet(b"\x00\x05\x86\xdd" + ip, 0x8100)),
            *[
                (lt.NULL, synth.loopback(LINK_PACKET, family=f, byteorder=o))
                for f in (10, 24, 28, 30)
                for o in ("little", "big")
            ],
            (lt.LOOP, synth.loopback(ip, family=24, byteorder="big")),
            (lt.RAW, ip),
            (lt.RAW_DLT12, ip),
            (lt.IPV6, ip),
        ],
    )
    def test_ipv6_over(self, encoder: Encoder, linktype: int, frame: bytes) -> None:
        got = encoder(linktype, frame, EncoderConfig())
        assert (got.status, got.header, got.payload) == ("ok", self.expected, payload(b"link6"))

    @pytest.mark.parametrize(
        ("linktype", "frame", "status"),
        [
            (lt.IPV6, synth.ipv4(synth.tcp(), 6), "bad_ip_version"),
            (lt.IPV4, ip, "bad_ip_version"),
            (lt.NULL, synth.loopback(ip, family=7), "non_ip"),
            (lt.RAW, b"\x60", "truncated_ip_header"),
        ],
    )
    def test_rejects(self, encoder: Encoder, linktype: int, frame: bytes, status: str) -> None:
        assert encoder(linktype, frame, EncoderConfig()) == EncodedPacket(status=status)


class TestMasking:
    ext = synth.ipv6_extension(HBH, 6, ROUTER_ALERT)
    seg = synth.tcp(b"m")
    frame = synth.ethernet(
        synth.ipv6(seg, HBH, extensions=ext, flow=0xABCDE, hop_limit=3), synth.ETHERTYPE_IPV6
    )
    fields: ClassVar[dict[str, object]] = {
        "header_len": 48,
        "payload_length": 8 + len(seg),
        "upper": 6,
        "present": 1,
        "extensions": ext,
        "hop_limit": 3,
        "flow": 0xABCDE,
    }

    def test_no_mask_keeps_the_addresses(self, encoder: Encoder) -> None:
        got = encoder(lt.ETHERNET, self.frame, EncoderConfig(mask_fields=()))
        assert got.header == header(slot(**self.fields, masked=False), tcp=self.seg[:20])  # type: ignore[arg-type]

    def test_fields_zeroed_where_the_packet_has_them(self, encoder: Encoder) -> None:
        config = EncoderConfig(
            mask_fields=("ip.src", "ip.flow", "ip.ttl", "ip.options", "checksums", "ip.len")
        )
        got = encoder(lt.ETHERNET, self.frame, config)
        want = bytearray(slot(**self.fields, masked=False))  # type: ignore[arg-type]
        want[12:28] = bytes(16)  # source; destination kept
        want[44:47] = bytes(3)  # flow label
        want[8] = 0  # hop limit
        want[2:4] = bytes(2)  # length
        want[47:56] = bytes(9)  # extension bits and the 8 extension bytes present
        assert want[10:12] == FF * 2  # absent: left alone
        assert want[56:60] == FF * 4
        tcp = bytearray(self.seg[:20])
        tcp[16:18] = bytes(2)  # tcp checksum
        assert got.header == header(bytes(want), tcp=bytes(tcp))


@pytest.mark.parametrize(
    ("src", "dst"),
    [("::ffff:192.0.2.1", "ff02::1:ff00:1"), ("2001:db8::", "fe80::1:2:3:4"), ("::", "::1")],
)
def test_address_text(encoder: Encoder, src: str, dst: str) -> None:
    packet = synth.ipv6(synth.udp(b"a"), 17, src=src, dst=dst)
    got = encoder(lt.ETHERNET, synth.ethernet(packet, ETHERTYPE), EncoderConfig())
    pton = socket.inet_pton
    assert (got.src_ip, got.dst_ip) == (
        socket.inet_ntop(socket.AF_INET6, pton(socket.AF_INET6, src)),
        socket.inet_ntop(socket.AF_INET6, pton(socket.AF_INET6, dst)),
    )


@pytest.mark.parametrize("collide", [False, True])
def test_address_text_in_a_mixed_batch(monkeypatch: pytest.MonkeyPatch, collide: bool) -> None:
    """IPv4, IPv6 and ARP rows interleaved, addresses repeated: every row gets its own
    texts. ``collide`` zeroes the hash's multiplier, so fe80::1 and 2001:db8::1 (the same
    low 8 bytes) hash alike and the exact fallback must tell them apart."""
    if collide:
        monkeypatch.setattr(fast_ipv6, "_MIX", np.uint64(0))
    pairs = [("fe80::1", "2001:db8::1"), ("2001:db8::1", "fe80::1"), ("fe80::1", "fe80::1")]
    rows = []
    for i, (src, dst) in enumerate(pairs * 3):
        six = synth.ipv6(synth.udp(b"a"), 17, src=src, dst=dst)
        four = synth.ipv4(synth.udp(b"b"), 17, src=f"10.0.0.{i}", dst="10.0.0.99")
        rows += [(lt.ETHERNET, synth.ethernet(six, ETHERTYPE)), (lt.RAW, four)]
    got = encode_batch(raw_batch(rows), EncoderConfig()).to_pylist()
    for (linktype, frame), row in zip(rows, got, strict=True):
        want = encode_packet(linktype, frame, EncoderConfig())
        assert (row["src_ip"], row["dst_ip"]) == (want.src_ip, want.dst_ip)
    assert got[2]["src_ip"] == "2001:db8::1"
    assert got[3]["src_ip"] == "10.0.0.1"


@pytest.mark.parametrize(
    "mask",
    [(), ("ip.src", "ip.dst", "path", "checksums"), ("ip.flow", "ip.len", "ip.tos", "ip.proto")],
)
def test_ipv6_twin_slot_is_what_the_encoder_gives_the_ipv6_packet(mask: tuple[str, ...]) -> None:
    """Training's IPv6 twins (model/augment.py) are built from IPv4 slots; each must equal
    the encoder's slot of the same packet really sent over IPv6."""
    config = EncoderConfig(mask_fields=mask)
    cases = [  # (transport, proto, tos, ttl, flow label)
        (synth.tcp(b"hello", sport=40000, dport=8883), 6, 0xB8, 57, 0x12345),
        (synth.udp(b"coap" * 40), 17, 0, 255, 0),
        (synth.tcp(b""), 6, 0x03, 1, 0xFFFFF),
    ]
    four = [(lt.RAW, synth.ipv4(seg, p, "192.0.2.1", "198.51.100.7", tos=tos, ttl=ttl))
            for seg, p, tos, ttl, _ in cases]  # fmt: skip
    six = [
        (lt.RAW, synth.ipv6(seg, p, "::ffff:192.0.2.1", "::ffff:198.51.100.7",
                            traffic_class=tos, flow=flow, hop_limit=ttl))
        for seg, p, tos, ttl, flow in cases
    ]  # fmt: skip

    def slots(rows: list[tuple[int, bytes]]) -> np.ndarray:
        headers = encode_batch(raw_batch(rows), config).column("header").to_pylist()
        return np.stack([np.frombuffer(h, np.uint8)[:IP_SLOT_LEN] for h in headers])

    flows = np.array([flow for *_, flow in cases], np.int64)
    twins = fast_ipv6.ipv6_twin_slots(slots(four), flows, config.mask_fields)
    np.testing.assert_array_equal(twins, slots(six))
