"""Schemas of the per-packet records: raw packets, encoded packets, packet verdicts.

Schema metadata (all values UTF-8 bytes): ``schema`` (name), ``version``; encoded batches
add ``layout_version``, ``payload_bytes`` and ``mask_fields`` (comma separated) so that a
consumer can refuse batches encoded differently from what its model was trained on.

The three layout constants the encoded schema needs live here, not in
:mod:`amlhp.encoders.layout` (which imports them from here), so that the wire layer
imports nothing of the stages.

Raw packets, ``amlhp.raw`` v1:

============  =========  ======================================================
column        type       meaning
============  =========  ======================================================
gateway       string     the sensor/gateway that captured the packet
ts_ns         int64      capture timestamp, ns since the Unix epoch
seq           uint64     per-gateway sequence number, in capture order
linktype      uint16     pcap LINKTYPE of ``data`` (0xffff: unknown interface)
wire_len      uint32     length of the packet on the wire
data          binary     the captured bytes (link layer included, maybe truncated)
============  =========  ======================================================

Encoded packets, ``amlhp.encoded`` v2: ``gateway, ts_ns, seq, wire_len, linktype`` as above,
then the clear 5-tuple ``src_ip``/``dst_ip`` (string, dotted quad or IPv6 text; null unless
the IP header was valid; an ARP frame's sender and target protocol addresses),
``src_port``/``dst_port`` (uint16; null unless a TCP/UDP header was encoded), ``proto``
(uint8, null unless the IP header was valid), ``header`` (fixed_size_binary(128), ``h``;
null unless ok), ``payload`` (fixed_size_binary(P), ``d``; null unless ok), ``status``
(string: ``ok`` or a reason code from :mod:`amlhp.encoders.reasons`), ``arp_op`` (uint16)
and ``arp_mac`` (string, the sender hardware address): null unless status is ``arp``.
v1 lacked the two ARP columns.

Verdicts, ``amlhp.verdict`` v4 (v1 lacked ``malicious_score``, ``decision`` and
``ood_score``; v2 the packet facts; v3 the ARP facts): the identity, 5-tuple and
``status`` columns of the encoded record, then (an ARP frame's row, status ``arp``, is
not scored: label ``arp``, decision ``not_scored``, the model's columns null)

================  ==============  ====================================================
column            type            meaning
================  ==============  ====================================================
label             string          predicted class name (``arp`` for ARP frames)
class_id          int16           predicted class index (null when not scored)
score             float32         probability of the predicted class
probs             list<float32>   probabilities of all classes, in class-id order (nullable)
malicious_score   float32         calibrated probability that the packet is malicious
decision          string          ``malicious``, ``benign``, ``uncertain`` (``not_scored``)
ood_score         float32         energy of the logits: high is unlike the training data
tcp_flags         uint8           TCP flags byte (null: not TCP)        } packet facts for
payload_len       uint32          transport payload bytes               } the behaviour
dns_qname         string          a DNS query's name (cut: ends "...")  } detectors, see
modbus_fc         uint8           Modbus/TCP function code              } encoders.facts
icmp_type         uint8           ICMP/ICMPv6 type (null: neither)      }
arp_op            uint16          ARP operation (null: not ARP)         }
arp_mac           string          ARP sender hardware address           }
model_version     string          identity of the model that scored the packet
ingested_at_ns    int64           when the raw batch entered Kafka: the tap's publish time
encoded_at_ns     int64           when the packet was encoded (ns since epoch)
scored_at_ns      int64           when the verdict was produced (ns since epoch)
inference_ns      int64           model forward time of the packet's batch, in ns
================  ==============  ====================================================
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

from amlhp.wire.exceptions import BatchDecodeError

#: Version of the byte layout of ``h``/``d`` (see :mod:`amlhp.encoders.layout`; bump when
#: any rule changes; stored in encoded batches).
LAYOUT_VERSION: Final = "1"
#: Length of the header vector ``h``: the width of the encoded ``header`` column.
HEADER_LEN: Final = 128
#: The paper's masked header fields (the IPv4 addresses), the encoders' default.
DEFAULT_MASK_FIELDS: Final = ("ip.src", "ip.dst")

RAW: Final = "amlhp.raw"
ENCODED: Final = "amlhp.encoded"
VERDICT: Final = "amlhp.verdict"
#: the versions of these schemas that this code writes and reads (see the registry)
RAW_VERSION, ENCODED_VERSION, VERDICT_VERSION = "1", "2", "4"

IDENTITY_FIELDS: Final = (
    pa.field("gateway", pa.string(), nullable=False),
    pa.field("ts_ns", pa.int64(), nullable=False),
    pa.field("seq", pa.uint64(), nullable=False),
    pa.field("wire_len", pa.uint32(), nullable=False),
    pa.field("linktype", pa.uint16(), nullable=False),
)
FIVE_TUPLE_FIELDS: Final = (
    pa.field("src_ip", pa.string()),
    pa.field("dst_ip", pa.string()),
    pa.field("src_port", pa.uint16()),
    pa.field("dst_port", pa.uint16()),
    pa.field("proto", pa.uint8()),
)
STATUS_FIELD: Final = pa.field("status", pa.string(), nullable=False)
#: an ARP frame's operation (1 request, 2 reply) and sender hardware address; null for
#: every other packet (its sender and target protocol addresses are ``src_ip``/``dst_ip``)
ARP_FIELDS: Final = (
    pa.field("arp_op", pa.uint16()),
    pa.field("arp_mac", pa.string()),
)
#: what the behaviour detectors read of each packet (:mod:`amlhp.encoders.facts`)
FACT_FIELDS: Final = (
    pa.field("tcp_flags", pa.uint8()),
    pa.field("payload_len", pa.uint32()),
    pa.field("dns_qname", pa.string()),
    pa.field("modbus_fc", pa.uint8()),
    pa.field("icmp_type", pa.uint8()),
    *ARP_FIELDS,
)


def metadata(name: str, version: str, **extra: str) -> dict[bytes, bytes]:
    """Schema metadata naming a schema and its version, plus ``extra`` keys."""
    meta = {b"schema": name.encode(), b"version": version.encode()}
    meta.update({k.encode(): v.encode() for k, v in extra.items()})
    return meta


def raw_schema() -> pa.Schema:
    """Schema of captured packets as the sensor publishes them."""
    return pa.schema(
        [
            pa.field("gateway", pa.string(), nullable=False),
            pa.field("ts_ns", pa.int64(), nullable=False),
            pa.field("seq", pa.uint64(), nullable=False),
            pa.field("linktype", pa.uint16(), nullable=False),
            pa.field("wire_len", pa.uint32(), nullable=False),
            pa.field("data", pa.binary(), nullable=False),
        ],
        metadata=metadata(RAW, RAW_VERSION),
    )


def encoded_schema(
    payload_bytes: int, mask_fields: tuple[str, ...] = DEFAULT_MASK_FIELDS
) -> pa.Schema:
    """Schema of encoded packets with payload length P = ``payload_bytes``."""
    return pa.schema(
        [
            *IDENTITY_FIELDS,
            *FIVE_TUPLE_FIELDS,
            pa.field("header", pa.binary(HEADER_LEN)),
            pa.field("payload", pa.binary(payload_bytes)),
            STATUS_FIELD,
            *ARP_FIELDS,
        ],
        metadata=metadata(
            ENCODED,
            ENCODED_VERSION,
            layout_version=LAYOUT_VERSION,
            payload_bytes=str(payload_bytes),
            mask_fields=",".join(mask_fields),
        ),
    )


def verdict_schema() -> pa.Schema:
    """Schema of per-packet verdicts (see the module docstring for the columns)."""
    return pa.schema(
        [
            *IDENTITY_FIELDS,
            *FIVE_TUPLE_FIELDS,
            STATUS_FIELD,
            pa.field("label", pa.string()),
            pa.field("class_id", pa.int16()),
            pa.field("score", pa.float32()),
            pa.field("probs", pa.list_(pa.float32())),
            pa.field("malicious_score", pa.float32()),
            pa.field("decision", pa.string()),
            pa.field("ood_score", pa.float32()),
            *FACT_FIELDS,
            pa.field("model_version", pa.string()),
            pa.field("ingested_at_ns", pa.int64()),
            pa.field("encoded_at_ns", pa.int64()),
            pa.field("scored_at_ns", pa.int64()),
            pa.field("inference_ns", pa.int64()),
        ],
        metadata=metadata(VERDICT, VERDICT_VERSION),
    )


def payload_bytes_of(schema: pa.Schema) -> int:
    """P of an encoded schema, from the width of its ``payload`` column."""
    if "payload" not in schema.names:
        raise BatchDecodeError("encoded batch without a payload column")
    field = schema.field("payload")
    if not pa.types.is_fixed_size_binary(field.type):
        raise BatchDecodeError(f"payload column is {field.type}, not fixed_size_binary")
    return int(field.type.byte_width)


def encoded_like(received: pa.Schema) -> pa.Schema:
    """The encoded schema this code expects, with P taken from ``received``."""
    return encoded_schema(payload_bytes_of(received))
