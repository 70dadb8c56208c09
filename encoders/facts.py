"""Facts of each packet that the behaviour detectors need, read from its encoded vectors.

The alert stage judges hosts by behaviour as well as by the model's verdicts (unanswered
connection attempts, DNS names, Modbus commands). Those facts are already in the aligned
header ``h`` and the first P payload bytes ``d`` that every encoded record carries, so they
are read here, once, from the same arrays the model scores, and travel on the verdict
record (``amlhp.verdict`` v3): the stream's worker and ``amlhp alerts`` offline both call
:func:`packet_facts`, so the detectors see the same values in both.

* ``tcp_flags`` (uint8): the TCP flags byte; null unless the packet has a TCP header.
* ``payload_len`` (uint32): transport payload bytes (IPv4 total length minus the IPv4 and
  TCP/UDP headers); null where ``ip.len`` is masked or the packet has no vector.
* ``dns_qname`` (string): the first question's name of a DNS query (UDP to port 53), as far
  as the P payload bytes hold it; a name cut by P ends in ``"..."``; null otherwise.
* ``modbus_fc`` (uint8): the Modbus/TCP function code of a request or reply on port 502
  (the byte after the 7-byte MBAP header); null otherwise.
* ``icmp_type`` (uint8): the ICMP or ICMPv6 type (the first byte after the network
  header, where the payload vector of an ICMP packet starts); null unless ICMP or ICMPv6.

IPv6 packets are read the same way: their network slot keeps the length, protocol and
header length where IPv4 has them (:mod:`amlhp.encoders.layout`). Extension headers
beyond the slot's 60 bytes are counted in ``payload_len``.

* ``arp_op`` (uint16) and ``arp_mac`` (string): the link-layer address a packet binds
  to an IP address, for the ARP detectors. An ARP frame's operation and sender hardware
  address, as the encoder read them; and IPv6's equivalent, a **neighbour advertisement**
  (ICMPv6 type 136) for its own source address whose first option is the target
  link-layer address: operation 2 (a reply) and that option's MAC. An advertisement for
  another address than its source (a router's proxy) is not read: the binding's address
  is the row's source. Null for every other packet.

A field the model's encoder masks (``mask_fields`` in the encoded schema) reads as null,
never as the zeros the mask wrote.
"""

from __future__ import annotations

import socket
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.layout import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    PAD_BYTE,
    TCP_SLOT_OFFSET,
    UDP_HEADER,
    UDP_SLOT_OFFSET,
)
from amlhp.wire.packets import ARP_FIELDS, FACT_FIELDS

DNS_PORT, MODBUS_PORT, IPPROTO_ICMP, IPPROTO_ICMPV6 = 53, 502, 1, 58
#: a neighbour advertisement (RFC 4861 4.4): type, its target at 8-23, the first option
#: at 24 (type 2 = target link-layer address, length 1 = 8 bytes, the MAC at 26-31)
ND_ADVERTISEMENT, ND_TARGET_AT, ND_OPTION_AT, ND_TARGET_MAC = 136, 8, 24, 2
ARP_REPLY = 2
DNS_HEADER, MBAP_HEADER = 12, 7
TRUNCATED: Final = "..."


def _masked(schema: pa.Schema) -> set[str]:
    raw = (schema.metadata or {}).get(b"mask_fields", b"")
    return set(raw.decode().split(",")) if raw else set()


def dns_name(payload: bytes) -> str | None:
    """The first question's name of a DNS message (labels joined by dots), ``None`` when
    the bytes are not a query with a plain name; cut names end in ``"..."``."""
    if len(payload) <= DNS_HEADER or payload[2] & 0x80:  # too short, or a response
        return None
    labels: list[str] = []
    i = DNS_HEADER
    while i < len(payload):
        n = payload[i]
        if n == 0:
            return ".".join(labels) if labels else None
        if n > 63:  # a compression pointer or reserved bits: not a plain question name
            return None
        label = payload[i + 1 : i + 1 + n]
        labels.append(label.decode("ascii", "replace"))
        if i + 1 + n > len(payload):
            break
        i += 1 + n
    return ".".join(labels) + TRUNCATED if labels else None


def _tcp_flags(header: npt.NDArray[np.uint8], tcp: npt.NDArray[np.bool_]) -> pa.Array:
    flags = header[:, TCP_SLOT_OFFSET + 13]
    return pa.array(flags, pa.uint8(), mask=~tcp)


def _payload_len(
    header: npt.NDArray[np.uint8], ok: npt.NDArray[np.bool_], tcp: npt.NDArray[np.bool_],
    udp: npt.NDArray[np.bool_],
) -> pa.Array:  # fmt: skip
    total = header[:, 2].astype(np.int64) << 8 | header[:, 3]
    ihl = (header[:, 0] & 0x0F).astype(np.int64) * 4
    transport = np.where(tcp, (header[:, TCP_SLOT_OFFSET + 12] >> 4).astype(np.int64) * 4, 0)
    transport = np.where(udp, UDP_HEADER, transport)
    length = total - ihl - transport
    return pa.array(np.maximum(length, 0), pa.uint32(), mask=~ok | (length < 0))


def packet_facts(table: pa.Table | pa.RecordBatch) -> dict[str, pa.Array]:
    """The :data:`FACT_FIELDS` columns of an encoded table (see the module docstring)."""
    n = table.num_rows
    if n == 0:
        return {f.name: pa.nulls(0, f.type) for f in FACT_FIELDS}
    header, payload, ok = model_inputs(table)
    masked = _masked(table.schema)
    proto = header[:, 9]
    tcp = ok & (proto == IPPROTO_TCP) & (header[:, TCP_SLOT_OFFSET + 12] != PAD_BYTE)
    udp_slot = header[:, UDP_SLOT_OFFSET : UDP_SLOT_OFFSET + UDP_HEADER]
    udp = ok & (proto == IPPROTO_UDP) & ~tcp & (udp_slot != PAD_BYTE).any(axis=1)
    out: dict[str, pa.Array] = {
        "tcp_flags": _tcp_flags(header, tcp),
        "payload_len": _payload_len(header, ok, tcp, udp),
    }
    if "tcp.offset" in masked:
        out["tcp_flags"] = pa.nulls(n, pa.uint8())
    if "ip.len" in masked or "tcp.offset" in masked:
        out["payload_len"] = pa.nulls(n, pa.uint32())
    dport = table.column("dst_port").to_numpy(zero_copy_only=False)
    sport = table.column("src_port").to_numpy(zero_copy_only=False)
    dport = np.nan_to_num(dport.astype(np.float64), nan=-1).astype(np.int64)
    sport = np.nan_to_num(sport.astype(np.float64), nan=-1).astype(np.int64)
    names: list[str | None] = [None] * n
    for i in np.flatnonzero(udp & (dport == DNS_PORT)).tolist():
        names[i] = dns_name(payload[i].tobytes())
    out["dns_qname"] = pa.array(names, pa.string())
    modbus = tcp & ((dport == MODBUS_PORT) | (sport == MODBUS_PORT)) & (payload.shape[1] > 7)
    length = out["payload_len"].to_numpy(zero_copy_only=False)
    modbus &= np.nan_to_num(length.astype(np.float64), nan=0) > MBAP_HEADER
    fc = payload[:, MBAP_HEADER] if payload.shape[1] > MBAP_HEADER else np.zeros(n, np.uint8)
    out["modbus_fc"] = pa.array(fc, pa.uint8(), mask=~modbus)
    icmp = ok & ((proto == IPPROTO_ICMP) | (proto == IPPROTO_ICMPV6)) & (payload.shape[1] > 0)
    first = payload[:, 0] if payload.shape[1] else np.zeros(n, np.uint8)
    out["icmp_type"] = pa.array(first, pa.uint8(), mask=~icmp)
    for field in ARP_FIELDS:  # read by the encoder from the ARP body (null elsewhere)
        if field.name not in table.column_names:
            out[field.name] = pa.nulls(n, field.type)
            continue
        column = table.column(field.name)
        out[field.name] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    advertised = _neighbour_advertisements(table, payload, ok & (proto == IPPROTO_ICMPV6))
    if advertised:
        ops, macs = out["arp_op"].to_pylist(), out["arp_mac"].to_pylist()
        for row, mac in advertised.items():
            ops[row], macs[row] = ARP_REPLY, mac
        out["arp_op"] = pa.array(ops, pa.uint16())
        out["arp_mac"] = pa.array(macs, pa.string())
    return out


def _neighbour_advertisements(
    table: pa.Table | pa.RecordBatch, payload: npt.NDArray[np.uint8], icmpv6: npt.NDArray[np.bool_]
) -> dict[int, str]:
    """Row -> advertised MAC of the neighbour advertisements that bind their own source
    address (module docstring); the ICMPv6 message starts the payload vector."""
    end = ND_OPTION_AT + 8
    if payload.shape[1] < end:
        return {}
    first = payload[:, ND_OPTION_AT : ND_OPTION_AT + 2]
    rows = np.flatnonzero(
        icmpv6 & (payload[:, 0] == ND_ADVERTISEMENT) & (first[:, 0] == ND_TARGET_MAC)
        & (first[:, 1] == 1)
    )  # fmt: skip
    if not len(rows):
        return {}
    sources = table.column("src_ip").take(pa.array(rows)).to_pylist()
    found = {}
    for row, source in zip(rows.tolist(), sources, strict=True):
        target = payload[row, ND_TARGET_AT : ND_TARGET_AT + 16].tobytes()
        if source and ":" in source and socket.inet_pton(socket.AF_INET6, source) == target:
            found[row] = payload[row, ND_OPTION_AT + 2 : end].tobytes().hex(":")
    return found
