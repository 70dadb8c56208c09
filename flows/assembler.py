"""Packets to flow records, the same way offline (captures) and online (the Faust agent).

Packets are parsed by the project's encoder (:func:`amlhp.encoders.fast.encode_batch`,
with a payload vector long enough for the whole payload buffer and nothing masked), so the
flow model sees exactly the IPv4/TCP/UDP rules of the packet model. Packets the encoder
refuses (not IPv4, truncated, ...) are counted by reason and not used; so are packets with
no endpoint in a local subnet.

Flows have a fixed lifetime: a packet more than ``lifetime`` after its flow's first packet
closes that flow and opens a new record with the same key, and :meth:`FlowAssembler.expire`
closes every flow whose lifetime has passed at a given event time (the gateway's latest
packet time), so a quiet flow is closed as soon as its gateway's clock moves on.
"""

from __future__ import annotations

import heapq
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import (
    PAD_BYTE,
    TCP_SLOT_OFFSET,
    UDP_HEADER,
    UDP_SLOT_OFFSET,
    EncoderConfig,
)
from amlhp.encoders.prefix import tapped
from amlhp.flows.record import (
    DIRECTION_IN,
    DIRECTION_OUT,
    PAYLOAD_SLOTS,
    FlowConfig,
    FlowKey,
    FlowState,
)

#: the encoder configuration of the flow path: whole payloads, no field masked
FLOW_ENCODER: Final = EncoderConfig(payload_bytes=PAYLOAD_SLOTS - 2, mask_fields=())


def flow_encoder(config: FlowConfig) -> EncoderConfig:
    """The flow path's encoder for ``config``: the whole payload buffer, or only the
    bytes a tap keeps when the model was built on tapped packets (``payload_bytes``):
    the rest would be padding, and encoding 2,998 slots per packet for 64 bytes of data
    was the costliest part of parsing a raw batch."""
    if config.payload_bytes is None:
        return FLOW_ENCODER
    return EncoderConfig(payload_bytes=max(1, min(PAYLOAD_SLOTS - 2, config.payload_bytes)),
                         mask_fields=())  # fmt: skip


@dataclass(frozen=True)
class ParsedPackets:
    """The columns of a batch the assembler needs, for the ``ok`` packets only."""

    gateway: list[str]
    ts_ns: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    src_ip: list[str]
    dst_ip: list[str]
    src_port: npt.NDArray[np.int64]
    dst_port: npt.NDArray[np.int64]
    proto: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    payload: npt.NDArray[np.uint8]
    payload_len: npt.NDArray[np.int64]
    row: npt.NDArray[np.int64]  # index of the packet in the raw batch
    refused: Counter[str]
    encoded: pa.RecordBatch  # the whole batch as encoded (for labelling rules)


def _ints(batch: pa.RecordBatch, name: str) -> npt.NDArray[np.int64]:
    return np.asarray(batch.column(name).fill_null(0).to_numpy(zero_copy_only=False), np.int64)


def parse_raw(raw: pa.RecordBatch, encoder: EncoderConfig = FLOW_ENCODER) -> ParsedPackets:
    """Parse a raw-schema batch with the encoder; keep ok packets, count the others."""
    encoded = encode_batch(raw, encoder)
    header, payload, ok = model_inputs(encoded)
    idx = np.flatnonzero(ok)
    statuses = encoded.column("status").to_numpy(zero_copy_only=False)
    refused = Counter(str(s) for s in statuses[~ok])
    sel = encoded.take(pa.array(idx, pa.int64()))
    h = header[idx].astype(np.int64)
    ihl4 = (h[:, 0] & 0x0F) * 4
    ip_len = (h[:, 2] << 8) | h[:, 3]
    has_tcp = np.any(header[idx, TCP_SLOT_OFFSET : TCP_SLOT_OFFSET + 20] != PAD_BYTE, axis=1)
    has_udp = ~has_tcp & np.any(
        header[idx, UDP_SLOT_OFFSET : UDP_SLOT_OFFSET + UDP_HEADER] != PAD_BYTE, axis=1
    )
    l4 = np.where(has_tcp, (h[:, TCP_SLOT_OFFSET + 12] >> 4) * 4, np.where(has_udp, UDP_HEADER, 0))
    wire = _ints(sel, "wire_len")
    # A total length smaller than the header (TCP segmentation offload): size from the wire.
    valid_len = ip_len >= ihl4
    size = np.where(valid_len, ip_len, wire)
    # Payload bytes the frame still holds: a tap keeps only the first P (the encoder pads
    # the rest), so the bytes cut off (wire length - captured length) are not payload.
    lengths = pc.binary_length(raw.column("data")).to_numpy(zero_copy_only=False)
    captured = np.asarray(lengths, np.int64)[idx]
    cut = np.maximum(wire - captured, 0)
    payload_len = np.where(valid_len, np.clip(ip_len - ihl4 - l4 - cut, 0, payload.shape[1]), 0)
    return ParsedPackets(
        gateway=[str(g) for g in sel.column("gateway").to_pylist()],
        ts_ns=_ints(sel, "ts_ns"),
        seq=_ints(sel, "seq"),
        src_ip=[str(s) for s in sel.column("src_ip").to_pylist()],
        dst_ip=[str(s) for s in sel.column("dst_ip").to_pylist()],
        src_port=_ints(sel, "src_port"),
        dst_port=_ints(sel, "dst_port"),
        proto=_ints(sel, "proto"),
        size=size.astype(np.int64),
        payload=payload[idx],
        payload_len=payload_len.astype(np.int64),
        row=idx.astype(np.int64),
        refused=refused,
        encoded=encoded,
    )


@dataclass
class AssemblerStats:
    """Counts of what the assembler did with the packets it was given."""

    packets: int = 0
    used: int = 0
    records: int = 0  # packet-records: a device-to-device packet counts twice
    no_local_endpoint: int = 0
    duplicates: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    flows_closed: int = 0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "refused": dict(self.refused)}


class FlowAssembler:
    """Open flows per key; packets in, closed :class:`FlowState` records out.

    ``seq`` numbers of a gateway's packets only grow (the tap's contract); a packet whose
    ``seq`` is not above the last one applied for its gateway is a re-delivery and is
    skipped, which makes the online state idempotent under at-least-once delivery.
    """

    def __init__(self, config: FlowConfig) -> None:
        self.config = config
        self.open: dict[FlowKey, FlowState] = {}
        self.watermark_seq: dict[str, int] = {}
        self.clock_ns: dict[str, int] = {}  # latest packet time per gateway
        self.stats = AssemblerStats()
        self.dirty: set[FlowKey] = set()  # keys changed since the last take_dirty()
        self.removed: set[FlowKey] = set()
        self._nets = config.networks()
        self.encoder = flow_encoder(config)
        self._local_cache: dict[str, bool] = {}
        #: per gateway, (start, key) of its open flows in start order, so that
        #: :meth:`expire` pops the due ones instead of scanning every open flow (entries of
        #: flows closed meanwhile are stale and skipped)
        self._due: dict[str, list[tuple[int, FlowKey]]] = {}

    def _track(self, state: FlowState) -> None:
        heapq.heappush(self._due.setdefault(state.key.gateway, []), (state.start_ns, state.key))

    def is_local(self, ip: str) -> bool:
        hit = self._local_cache.get(ip)
        if hit is None:
            try:
                addr = ipaddress.IPv4Address(ip)
            except ValueError:
                hit = False
            else:
                hit = any(addr in net for net in self._nets)
            self._local_cache[ip] = hit
        return hit

    # -- state changes ----------------------------------------------------------------
    def _close(self, key: FlowKey) -> FlowState:
        state = self.open.pop(key)
        self.dirty.discard(key)
        self.removed.add(key)
        self.stats.flows_closed += 1
        return state

    def _touch(self, key: FlowKey) -> None:
        self.dirty.add(key)
        self.removed.discard(key)

    def as_tapped(self, raw: pa.RecordBatch) -> pa.RecordBatch:
        """``raw`` cut as the product's taps cut it (the config's payload bytes), so that
        a flow record holds the same bytes offline and in the stream."""
        if self.config.payload_bytes is None:
            return raw
        return tapped(raw, self.config.payload_bytes)

    def parse(self, raw: pa.RecordBatch) -> ParsedPackets:
        """``raw`` cut as a tap cuts it (:meth:`as_tapped`), parsed (:func:`parse_raw`)."""
        return parse_raw(self.as_tapped(raw), self.encoder)

    def restore(self, state: FlowState) -> None:
        """Put back an open flow read from durable state (a restarted worker)."""
        self.open[state.key] = state
        self._track(state)

    def add_packet(
        self,
        key: FlowKey,
        ts_ns: int,
        size: int,
        direction: int,
        payload: bytes,
        seq: int,
        label: int = -1,
    ) -> FlowState | None:
        """Account one packet-record; returns the flow it closed (lifetime over) if any.
        A packet whose ``seq`` the flow already holds is skipped: a worker stopped part
        way through a step's state writes can have stored the flow with it but not the
        gateway's watermark, and then does the step again."""
        closed = None
        state = self.open.get(key)
        if state is not None and state.packets and seq <= state.last_seq:
            self.stats.duplicates += 1
            return None
        if state is not None and ts_ns - state.start_ns >= self.config.lifetime_ns:
            closed = self._close(key)
            state = None
        if state is None:
            state = FlowState(key=key, start_ns=ts_ns, last_ns=ts_ns)
            self.open[key] = state
            self._track(state)
        state.add(ts_ns, size, direction, payload, seq, label)
        self._touch(key)
        self.stats.records += 1
        return closed

    def add_parsed(
        self, parsed: ParsedPackets, labels: npt.NDArray[np.int64] | None = None
    ) -> list[FlowState]:
        """Account parsed packets (in order); returns the flows closed by their lifetime."""
        closed: list[FlowState] = []
        self.stats.refused.update(parsed.refused)
        self.stats.packets += len(parsed.row) + sum(parsed.refused.values())
        for i in range(len(parsed.row)):
            gateway = parsed.gateway[i]
            seq = int(parsed.seq[i])
            if seq <= self.watermark_seq.get(gateway, -1):
                self.stats.duplicates += 1
                continue
            self.watermark_seq[gateway] = seq
            ts = int(parsed.ts_ns[i])
            self.clock_ns[gateway] = max(ts, self.clock_ns.get(gateway, ts))
            src, dst = parsed.src_ip[i], parsed.dst_ip[i]
            sides = []
            if self.is_local(src):
                sides.append((src, dst, int(parsed.src_port[i]), int(parsed.dst_port[i]), 1))
            if self.is_local(dst):
                sides.append((dst, src, int(parsed.dst_port[i]), int(parsed.src_port[i]), 0))
            if not sides:
                self.stats.no_local_endpoint += 1
                continue
            self.stats.used += 1
            n = int(parsed.payload_len[i])
            data = parsed.payload[i, :n].tobytes()
            label = int(labels[i]) if labels is not None else -1
            proto = int(parsed.proto[i])
            size = int(parsed.size[i])
            for device, remote, dport, rport, out in sides:
                key = FlowKey(gateway, device, remote, proto, dport, rport)
                direction = DIRECTION_OUT if out else DIRECTION_IN
                done = self.add_packet(key, ts, size, direction, data, seq, label)
                if done is not None:
                    closed.append(done)
        return closed

    def see(self, raw: pa.RecordBatch) -> None:
        """Move each gateway's clock to the latest packet time of ``raw``, packets no flow
        uses included, so that the flow worker's clock is the packet verdicts' clock."""
        if raw.num_rows == 0:
            return
        gateways = raw.column("gateway")
        names = pc.unique(gateways).to_pylist()
        for gateway in names:
            ts = raw.column("ts_ns")
            if len(names) > 1:
                ts = pc.filter(ts, pc.equal(gateways, gateway))
            latest = int(pc.max(ts).as_py())
            if latest > self.clock_ns.get(gateway, latest - 1):
                self.clock_ns[gateway] = latest

    def expire(self, gateway: str | None = None, now_ns: int | None = None) -> list[FlowState]:
        """Close flows whose lifetime has passed at ``now_ns`` (default: each gateway's
        latest packet time), for one gateway or all; oldest first."""
        closed = []
        for gw in [gateway] if gateway is not None else list(self._due):
            heap = self._due.get(gw)
            clock = now_ns if now_ns is not None else self.clock_ns.get(gw)
            if not heap or clock is None:
                continue
            while heap and clock - heap[0][0] >= self.config.lifetime_ns:
                start, key = heapq.heappop(heap)
                state = self.open.get(key)
                if state is not None and state.start_ns == start:
                    closed.append(self._close(key))
        return sorted(closed, key=_order)

    def close_all(self, gateway: str | None = None) -> list[FlowState]:
        """Close every open flow (end of a capture, or an idle gateway); oldest first."""
        keys = [k for k in self.open if gateway is None or k.gateway == gateway]
        for gw in [gateway] if gateway is not None else list(self._due):
            self._due.pop(gw, None)
        return sorted((self._close(k) for k in keys), key=_order)

    def take_changes(self) -> tuple[list[FlowState], list[FlowKey]]:
        """Flows changed and keys removed since the last call (for the durable state)."""
        changed = [self.open[k] for k in sorted(self.dirty, key=lambda k: k.text())]
        removed = sorted(self.removed, key=lambda k: k.text())
        self.dirty.clear()
        self.removed.clear()
        return changed, removed

    def drop_gateway(self, gateway: str) -> None:
        """Forget a gateway's open flows (its partition moved to another worker)."""
        for key in [k for k in self.open if k.gateway == gateway]:
            del self.open[key]
            self.dirty.discard(key)
        self._due.pop(gateway, None)
        self.watermark_seq.pop(gateway, None)
        self.clock_ns.pop(gateway, None)


def _order(state: FlowState) -> tuple[int, str]:
    return state.start_ns, state.key.text()


Labeler = Callable[[pa.RecordBatch], npt.NDArray[np.int64]]


def iter_closed(
    assembler: FlowAssembler,
    batches: Iterable[pa.RecordBatch],
    labeler: Labeler | None = None,
) -> Iterator[FlowState]:
    """Run raw batches through ``assembler``; yield every flow as it closes, then the rest.

    ``labeler`` maps an encoded batch to one class id per packet (-1: unlabelled); a flow's
    label is then the most common label of its packets.
    """
    for raw in batches:
        parsed = assembler.parse(raw)
        labels = labeler(parsed.encoded)[parsed.row] if labeler is not None else None
        yield from assembler.add_parsed(parsed, labels)
        assembler.see(raw)
        yield from assembler.expire()
    yield from assembler.close_all()
