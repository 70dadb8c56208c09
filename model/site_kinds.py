"""A packet's *kind* at a site: the few header facts that stay the same from one packet of a
conversation to the next, hashed to 64 bits.

Why: learning a site (:mod:`amlhp.model.site`) needs a notion of "this gateway's traffic
has looked like this before" that a new packet can be checked against in microseconds and
that the operator can read. The model's own view (its logits) was not used (not measured
either): the benign packets a new network gets wrong are those the model puts beside
attacks, so nearness in its view says little. The kind keeps what a device's normal
traffic repeats and an attack tool changes, and drops what differs per packet (sequence
numbers, checksums, IP ids, ephemeral ports, the addresses: masked in model inputs
anyway):

* IP version, header length, DSCP/ECN byte, the DF/MF flags, the upper protocol;
* TCP: flags, data offset, first option kind (SYN stacks differ: MSS+SACK+timestamps on
  an OS, MSS only for nmap, none for hping), receive window to a power of two;
* TCP and UDP: the service port (the lower of the two ports) and the direction (to it or
  from it);
* ICMP / ICMPv6: type and code;
* payload length to a power of two.

Not in it: payload bytes. The first byte of a TCP payload (TLS record type, MQTT packet
type, HTTP method) looked promising, but protocols that start with a counter (Modbus's
transaction id) make every few hundred packets a new kind: on the ICS source the second
half of each capture had 72.7% of its packets' kinds in the first half with it, 97.0%
without (measured once while designing, with a script that was not kept; an earlier kind
that also held the first byte of UDP payloads outside DNS). What a packet says
is judged by the model; the kind only says whether the site has sent such packets before,
and the per-kind score ceiling (:mod:`amlhp.model.site`) keeps a packet the model finds
more suspicious than any of its kind in the window.

Both sides use this one function on the encoder's arrays: adaptation (the window's
packets) and serving (the worker, replay and ``amlhp score``), so a kind means the same
at learning and at judging.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from amlhp.encoders.layout import (
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PAD_BYTE,
    TCP_SLOT_OFFSET,
    UDP_SLOT_OFFSET,
)

U64 = npt.NDArray[np.uint64]
ByteMatrix = npt.NDArray[np.uint8]

IPPROTO_ICMP = 1
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _log2_bucket(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """0 for 0, else 1 + floor(log2(v)): 1, 2-3, 4-7, ... (17 buckets for 16 bits)."""
    v = np.maximum(values, 0)
    out = np.zeros(v.shape, np.int64)
    nz = v > 0
    out[nz] = np.floor(np.log2(v[nz])).astype(np.int64) + 1
    return out


def _word(header: ByteMatrix, at: int) -> npt.NDArray[np.int64]:
    return header[:, at].astype(np.int64) << 8 | header[:, at + 1]


def kind_fields(header: ByteMatrix, payload: ByteMatrix) -> npt.NDArray[np.int64]:
    """(N, 15) the facts a kind is made of, in the order of the module docstring; 0 where
    a packet lacks the field (the tests read them by name through :data:`FIELDS`)."""
    n = header.shape[0]
    proto = header[:, 9].astype(np.int64)
    tcp = (proto == IPPROTO_TCP) & (header[:, TCP_SLOT_OFFSET + 12] != PAD_BYTE)
    udp_slot = header[:, UDP_SLOT_OFFSET : UDP_SLOT_OFFSET + 8]
    udp = (proto == IPPROTO_UDP) & ~tcp & (udp_slot != PAD_BYTE).any(axis=1)
    icmp = (proto == IPPROTO_ICMP) | (proto == IPPROTO_ICMPV6)
    ihl = (header[:, 0] & 0x0F).astype(np.int64) * 4
    doff = np.where(tcp, (header[:, TCP_SLOT_OFFSET + 12] >> 4).astype(np.int64) * 4, 0)
    total = _word(header, 2)
    transport = np.where(udp, 8, doff)
    length = np.maximum(total - ihl - transport, 0)
    sport = np.where(tcp, _word(header, TCP_SLOT_OFFSET), _word(header, UDP_SLOT_OFFSET))
    dport = np.where(tcp, _word(header, TCP_SLOT_OFFSET + 2), _word(header, UDP_SLOT_OFFSET + 2))
    ported = tcp | udp
    service = np.where(ported, np.minimum(sport, dport), 0)
    direction = np.where(ported, np.sign(sport - dport) + 2, 0)  # 1 from, 2 same, 3 to
    width = payload.shape[1]
    first = payload[:, 0].astype(np.int64) if width else np.zeros(n, np.int64)
    second = payload[:, 1].astype(np.int64) if width > 1 else np.zeros(n, np.int64)
    icmp_type = np.where(icmp, first + 1, 0)
    icmp_code = np.where(icmp, second, 0)
    option = np.where(tcp & (doff > 20), header[:, TCP_SLOT_OFFSET + 20].astype(np.int64) + 1, 0)
    window = np.where(tcp, _log2_bucket(_word(header, TCP_SLOT_OFFSET + 14)), 0)
    columns = [
        header[:, 0] >> 4,  # IP version
        ihl,
        header[:, 1],  # DSCP/ECN
        header[:, 6] >> 5,  # DF, MF
        proto,
        np.where(tcp, header[:, TCP_SLOT_OFFSET + 13], 0),  # TCP flags
        doff,
        option,
        window,
        service,
        direction,
        icmp_type,
        icmp_code,
        _log2_bucket(length),
        udp.astype(np.int64),
    ]
    return np.stack([np.asarray(c, np.int64) for c in columns], axis=1)


#: names of :func:`kind_fields`' columns
FIELDS: tuple[str, ...] = (
    "ip_version", "ihl", "tos", "ip_flags", "proto", "tcp_flags", "tcp_header", "tcp_option",
    "window_log2", "service_port", "direction", "icmp_type", "icmp_code", "payload_log2",
    "udp",
)  # fmt: skip


def packet_kinds(header: ByteMatrix, payload: ByteMatrix) -> U64:
    """(N,) 64-bit kind of each packet: :func:`kind_fields` mixed column by column."""
    fields = kind_fields(header, payload).astype(np.uint64)
    key = np.zeros(fields.shape[0], np.uint64)
    with np.errstate(over="ignore"):
        for j in range(fields.shape[1]):
            key = (key ^ fields[:, j]) * _MIX
            key ^= key >> np.uint64(29)
    return key


def describe_kind(fields: npt.NDArray[np.int64]) -> str:
    """One row of :func:`kind_fields` as an operator reads it (``tcp/443 to SYN len<64``)."""
    f = dict(zip(FIELDS, (int(v) for v in fields), strict=True))
    proto = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp", IPPROTO_ICMP: "icmp"}.get(
        f["proto"], "icmpv6" if f["proto"] == IPPROTO_ICMPV6 else f"ip{f['proto']}"
    )
    parts = [f"ipv{f['ip_version']}", proto]
    if f["service_port"] or f["direction"]:
        way = {1: "from", 2: "both", 3: "to"}.get(f["direction"], "?")
        parts.append(f"{way} port {f['service_port']}")
    if proto == "tcp":
        parts.append(f"flags=0x{f['tcp_flags']:02x}")
    if f["icmp_type"]:
        parts.append(f"type={f['icmp_type'] - 1} code={f['icmp_code']}")
    bucket = f["payload_log2"]
    parts.append(
        "no payload" if bucket == 0 else f"payload {1 << (bucket - 1)}-{(1 << bucket) - 1} B"
    )
    return " ".join(parts)
