"""The flow record: what one flow of one device looks like to the flow model, slot by slot.

A flow is the traffic of one local *device* with one remote endpoint, keyed by the 5-tuple
seen from the device (device IP, remote IP, protocol, device port, remote port) and cut
into records of a fixed lifetime (1 minute): a longer connection yields consecutive
records with the same key. Device-to-device traffic yields two mirrored records, one per
local endpoint. Direction is 1 for device -> remote, 0 for remote -> device.

One record is one row of ``ROW_LEN`` = 3,041 float slots (the model input is a matrix of
such rows, see :mod:`amlhp.flows.matrix`)::

    slot      0        present: 1 for a flow, 0 for an empty row (explicit demarcation)
    slot      1        start offset: seconds from this flow's first packet to the first
                       packet of the row-0 (current) flow; 0 for the current flow itself
    slots   2 ..  5    remote IPv4 address, one octet per slot (0.0.0.0 when private)
    slot      6        remote port (0 for protocols without ports)
    slot      7        device port
    slot      8        IP protocol number
    slot      9        total bytes (sum of the packets' IPv4 total lengths)
    slot     10        total packets
    slots  11 .. 40    packet i = 0..9 at 11 + 3 i: time offset from the flow start
                       (seconds), size (IPv4 total length), direction (1 out, 0 in);
                       -1, -1, -1 where the flow has fewer packets
    slots  41 .. 3040  payload buffer: for each of the first 10 packets, in order, the
                       marker -4, the packet's transport payload bytes (0..255), the
                       marker -8; a packet without payload is just -4, -8. A payload too
                       long for the space left is cut so that its end marker still fits;
                       a packet for which not even the two markers fit is left out. The
                       rest of the buffer is padding, -1.

An empty row (no flow) is 0 in slot 0 and the padding value -1 everywhere else. The
padding value -1 differs from every byte value and from both markers.

TCP header fields, MAC addresses and local addresses are deliberately not features (they
identify the network, not the device's behaviour). Private remote addresses
(``ipaddress.IPv4Address.is_private``: RFC 1918, loopback, link-local, ...) are
anonymised to 0.0.0.0 because they name the local network, not the service.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from amlhp.flows.exceptions import FlowConfigError, FlowStateError

FIRST_PACKETS: Final = 10
PAYLOAD_SLOTS: Final = 3000
PACKET_FIELDS: Final = 3
START_MARKER: Final = -4.0
END_MARKER: Final = -8.0
PAD: Final = -1.0
DEFAULT_LIFETIME_S: Final = 60.0
DEFAULT_CONTEXT: Final = 5
#: RFC 1918 private networks: the default local subnets (devices live here)
DEFAULT_LOCAL_NETS: Final = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")

# slot positions
SLOT_PRESENT: Final = 0
SLOT_START: Final = 1
SLOT_REMOTE_IP: Final = 2  # 4 slots
SLOT_REMOTE_PORT: Final = 6
SLOT_DEVICE_PORT: Final = 7
SLOT_PROTO: Final = 8
SLOT_BYTES: Final = 9
SLOT_PACKETS: Final = 10
META_LEN: Final = 11
PACKETS_OFFSET: Final = META_LEN
PACKETS_LEN: Final = FIRST_PACKETS * PACKET_FIELDS
PAYLOAD_OFFSET: Final = PACKETS_OFFSET + PACKETS_LEN
ROW_LEN: Final = PAYLOAD_OFFSET + PAYLOAD_SLOTS
#: the slots before the payload buffer ("head" of a row): stored as float32 per flow
HEAD_LEN: Final = PAYLOAD_OFFSET

DIRECTION_OUT: Final = 1
DIRECTION_IN: Final = 0

FloatArray = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True)
class FlowConfig:
    """How packets become flow records: local subnets, lifetime, context depth, and the
    payload bytes per packet a sensor tap keeps (``None``: all; the product's taps keep
    ``AMLHP_PAYLOAD_BYTES``, so a model for the stream is built and scored with that)."""

    local_nets: tuple[str, ...] = DEFAULT_LOCAL_NETS
    lifetime_s: float = DEFAULT_LIFETIME_S
    context: int = DEFAULT_CONTEXT
    payload_bytes: int | None = None

    def __post_init__(self) -> None:
        if not self.local_nets:
            raise FlowConfigError("at least one local subnet is needed (the devices' side)")
        try:
            nets = tuple(ipaddress.IPv4Network(n, strict=False) for n in self.local_nets)
        except ValueError as exc:
            raise FlowConfigError(f"bad local subnet: {exc}") from exc
        object.__setattr__(self, "local_nets", tuple(str(n) for n in nets))
        if not self.lifetime_s > 0:
            raise FlowConfigError(f"lifetime must be positive, got {self.lifetime_s}")
        if not 0 <= self.context <= 32:
            raise FlowConfigError(f"context must be 0..32 preceding flows, got {self.context}")
        if self.payload_bytes is not None and self.payload_bytes < 0:
            raise FlowConfigError(f"payload bytes must be >= 0, got {self.payload_bytes}")

    def as_dict(self) -> dict[str, object]:
        return {
            "local_nets": list(self.local_nets),
            "lifetime_s": self.lifetime_s,
            "context": self.context,
            "payload_bytes": self.payload_bytes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> FlowConfig:
        payload = d.get("payload_bytes")
        return cls(
            tuple(str(n) for n in d["local_nets"]),  # type: ignore[attr-defined]
            float(d["lifetime_s"]),  # type: ignore[arg-type]
            int(d["context"]),  # type: ignore[call-overload]
            None if payload is None else int(payload),  # type: ignore[call-overload]
        )

    @property
    def lifetime_ns(self) -> int:
        return int(self.lifetime_s * 1e9)

    @property
    def rows(self) -> int:
        """Rows of the model input: the current flow plus ``context`` preceding ones."""
        return 1 + self.context

    def networks(self) -> tuple[ipaddress.IPv4Network, ...]:
        return tuple(ipaddress.IPv4Network(n) for n in self.local_nets)


@functools.lru_cache(maxsize=65536)
def anonymise(remote_ip: str) -> str:
    """Private remote addresses become 0.0.0.0; public ones are kept (cached: a
    gateway's flows meet the same few peers again and again)."""
    try:
        addr = ipaddress.IPv4Address(remote_ip)
    except ValueError:
        return "0.0.0.0"
    return "0.0.0.0" if addr.is_private else remote_ip


class FlowKey(NamedTuple):
    """A flow seen from one device: gateway (capture), device side first. A named tuple:
    the assembler hashes one per packet, and a tuple's hash is the cheap one."""

    gateway: str
    device_ip: str
    remote_ip: str
    proto: int
    device_port: int
    remote_port: int

    def text(self) -> str:
        return (
            f"{self.gateway}|{self.device_ip}|{self.remote_ip}|{self.proto}|"
            f"{self.device_port}|{self.remote_port}"
        )

    @property
    def device(self) -> tuple[str, str]:
        return self.gateway, self.device_ip


@dataclass
class FlowState:
    """One flow record being assembled (or closed): counters, first packets, payloads."""

    key: FlowKey
    start_ns: int
    last_ns: int = 0
    total_bytes: int = 0
    packets: int = 0
    first_seq: int = 0
    last_seq: int = 0
    #: (time offset ns, size, direction) of the first FIRST_PACKETS packets
    head: list[tuple[int, int, int]] = field(default_factory=list)
    #: payload bytes kept for the first packets (already cut to fit the buffer)
    payloads: list[bytes] = field(default_factory=list)
    labels: Counter[int] = field(default_factory=Counter)
    #: the scorer's cache of this flow's offset-free branch outputs (see
    #: :meth:`amlhp.flows.numpy_net.NumpyFlowCNN.row_parts`); never serialised
    parts: Any = field(default=None, compare=False, repr=False)
    #: the same for the attack model's network, when the scorer runs one
    attack_parts: Any = field(default=None, compare=False, repr=False)
    _head: Any = field(default=None, compare=False, repr=False)
    _head_packets: int = field(default=-1, compare=False, repr=False)

    @property
    def flow_id(self) -> str:
        """Deterministic identity of the record: key and first packet time."""
        return f"{self.key.text()}|{self.start_ns}"

    @property
    def used_slots(self) -> int:
        """Payload slots taken: each kept payload and its two markers (at most ten: summed
        only while the first packets are still coming)."""
        return sum(len(p) + 2 for p in self.payloads)

    def add(
        self, ts_ns: int, size: int, direction: int, payload: bytes, seq: int, label: int = -1
    ) -> None:
        """Account one packet of this flow (packets come in capture order)."""
        if self.packets == 0:
            self.first_seq = seq
        self.packets += 1
        self.total_bytes += size
        self.last_ns = max(self.last_ns, ts_ns)
        self.last_seq = seq
        if label >= 0:
            self.labels[label] += 1
        if len(self.head) < FIRST_PACKETS:
            self.head.append((max(0, ts_ns - self.start_ns), size, direction))
            room = PAYLOAD_SLOTS - (self.used_slots if self.payloads else 0)
            if room >= 2:
                self.payloads.append(bytes(payload[: room - 2]))

    def label(self) -> int:
        """The flow's class: its most common packet label (-1 when unlabelled)."""
        if not self.labels:
            return -1
        best = max(self.labels.values())
        return min(c for c, n in self.labels.items() if n == best)

    # -- the row --------------------------------------------------------------------
    def head_vector(self) -> FloatArray:
        """Slots 0..40 of the row, with the start offset (slot 1) set to 0 (a copy)."""
        return self._head_slots().copy()

    def _head_slots(self) -> FloatArray:
        if self._head is not None and self._head_packets == self.packets:
            return self._head  # no packet since it was built: the same slots
        out = np.full(HEAD_LEN, PAD, np.float32)
        out[SLOT_PRESENT] = 1.0
        out[SLOT_START] = 0.0
        remote = anonymise(self.key.remote_ip)
        out[SLOT_REMOTE_IP : SLOT_REMOTE_IP + 4] = [int(o) for o in remote.split(".")]
        out[SLOT_REMOTE_PORT] = self.key.remote_port
        out[SLOT_DEVICE_PORT] = self.key.device_port
        out[SLOT_PROTO] = self.key.proto
        out[SLOT_BYTES] = self.total_bytes
        out[SLOT_PACKETS] = self.packets
        for i, (offset_ns, size, direction) in enumerate(self.head):
            base = PACKETS_OFFSET + PACKET_FIELDS * i
            out[base] = offset_ns / 1e9
            out[base + 1] = size
            out[base + 2] = direction
        self._head, self._head_packets = out, self.packets
        return out

    def payload_vector(self) -> Int16Array:
        """The 3,000-slot payload buffer (int16: bytes, markers -4/-8, padding -1)."""
        out = np.full(PAYLOAD_SLOTS, int(PAD), np.int16)
        pos = 0
        for data in self.payloads:
            out[pos] = int(START_MARKER)
            out[pos + 1 : pos + 1 + len(data)] = np.frombuffer(data, np.uint8)
            pos += 1 + len(data)
            out[pos] = int(END_MARKER)
            pos += 1
        return out

    def row(self, current_start_ns: int | None = None) -> FloatArray:
        """The full row; ``current_start_ns``: start of the row-0 flow (default: own)."""
        out = np.empty(ROW_LEN, np.float32)
        out[:HEAD_LEN] = self.head_vector()
        ref = self.start_ns if current_start_ns is None else current_start_ns
        out[SLOT_START] = max(0, ref - self.start_ns) / 1e9
        out[HEAD_LEN:] = self.payload_vector()
        return out

    # -- serialisation (Faust table values) ---------------------------------------------
    def to_bytes(self) -> bytes:
        """A compact, versioned binary form: the Faust table value of an open flow."""
        key_text = self.key.text().encode()
        parts = [
            _STATE.pack(
                _STATE_VERSION,
                len(key_text),
                self.start_ns,
                self.last_ns,
                self.total_bytes,
                self.packets,
                self.first_seq,
                self.last_seq,
                len(self.head),
                len(self.labels),
            ),
            key_text,
        ]
        parts.extend(_HEAD.pack(*h) for h in self.head)
        parts.append(struct.pack("<B", len(self.payloads)))
        for data in self.payloads:
            parts.append(struct.pack("<H", len(data)) + data)
        parts.extend(struct.pack("<iq", c, n) for c, n in sorted(self.labels.items()))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> FlowState:
        """Inverse of :meth:`to_bytes`; anything else raises :class:`FlowStateError`."""
        try:
            (version, key_len, start, last, nbytes, packets, first_seq, last_seq, nhead, nlab) = (
                _STATE.unpack_from(data, 0)
            )
            if version != _STATE_VERSION:
                raise FlowStateError(f"flow state version {version} is not {_STATE_VERSION}")
            pos = _STATE.size
            key = parse_key(data[pos : pos + key_len].decode())
            pos += key_len
            head = []
            for _ in range(nhead):
                head.append(_HEAD.unpack_from(data, pos))
                pos += _HEAD.size
            (npay,) = struct.unpack_from("<B", data, pos)
            pos += 1
            payloads = []
            for _ in range(npay):
                (length,) = struct.unpack_from("<H", data, pos)
                pos += 2
                payloads.append(bytes(data[pos : pos + length]))
                pos += length
            labels: Counter[int] = Counter()
            for _ in range(nlab):
                c, n = struct.unpack_from("<iq", data, pos)
                labels[c] = n
                pos += 12
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise FlowStateError(f"not a flow state: {exc}") from exc
        if pos != len(data):
            raise FlowStateError(f"flow state has {len(data) - pos} trailing bytes")
        # the fields in the order of the layout (:meth:`to_bytes`)
        head_rows = [(int(a), int(b), int(c)) for a, b, c in head]
        return cls(
            key, start, last, nbytes, packets, first_seq, last_seq, head_rows, payloads, labels
        )


_STATE_VERSION: Final = 1
_STATE = struct.Struct("<BHqqqqQQBB")
_HEAD = struct.Struct("<qiB")


def parse_key(text: str) -> FlowKey:
    """Inverse of :meth:`FlowKey.text` (the gateway may itself contain ``|``)."""
    parts = text.rsplit("|", 5)
    if len(parts) != 6:
        raise ValueError(f"not a flow key: {text!r}")
    gateway, device, remote, proto, dport, rport = parts
    return FlowKey(gateway, device, remote, int(proto), int(dport), int(rport))


def empty_row() -> FloatArray:
    """A row with no flow in it: 0 in the present slot, padding everywhere else."""
    out = np.full(ROW_LEN, PAD, np.float32)
    out[SLOT_PRESENT] = 0.0
    return out
