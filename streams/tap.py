"""The sensor tap: captured packets -> raw packet batches on the raw Kafka topic.

The tap runs on a gateway. It keeps only the bytes the encoder needs (link, IP and
transport headers plus the first P payload bytes, see
:func:`amlhp.encoders.layout.needed_prefix`), so the rest of a payload never leaves
the gateway. Packets are grouped into Arrow IPC batches bounded by count and by delay,
keyed by gateway id, and sent with an idempotent producer (acks from all replicas).
Every packet gets a per-gateway sequence number: together with the gateway id it is the
packet's identity downstream, used for exact accounting and de-duplication. A message's
Kafka timestamp is the capture time of its newest packet (never later than now), so that
``amlhp replay`` finds a capture-time window with Kafka's offsets-for-times.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from amlhp.encoders.prefix import needed_prefix
from amlhp.metrics.definitions import STEP_TAP, process_metrics
from amlhp.pipeline.kafka_io import (
    PACKETS_HEADER,
    PUBLISHED_HEADER,
    capture_timestamp_ms,
    producer_config,
)
from amlhp.settings import Settings
from amlhp.streams.batching import SizeTimeBatcher
from amlhp.streams.exceptions import TapError
from amlhp.streams.pacing import RatePacer
from amlhp.streams.tap_seq import SeqStart, SeqState
from amlhp.wire import raw_schema, to_ipc

log = logging.getLogger(__name__)

DLT_EN10MB = 1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


class Packet(NamedTuple):
    """One captured frame as the tap sees it (already truncated)."""

    ts_ns: int
    linktype: int
    wire_len: int
    data: bytes


@dataclass
class TapStats:
    """Counters a tap reports at the end; delivery failures make the run fail."""

    packets: int = 0
    bytes_captured: int = 0
    bytes_sent: int = 0
    messages: int = 0
    delivered_messages: int = 0
    delivered_packets: int = 0
    failed_messages: int = 0
    failed_packets: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The counters (the error texts are logged, not summarised)."""
        return {k: v for k, v in asdict(self).items() if k != "errors"}


def pcap_packets(
    paths: Iterable[Path],
    *,
    pace: float | None = None,
    loops: int = 1,
    keep_timestamps: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[Packet]:
    """Replay capture files.

    ``pace=None`` replays as fast as possible; ``pace=2.0`` replays at twice the original
    pace. Unless ``keep_timestamps`` is set, packets are re-stamped with the wall-clock
    time at which the tap emits them, as a live sensor would stamp them (this is what
    end-to-end latency is measured from).
    """
    from amlhp.encoders.readers import iter_raw_batches

    if pace is not None and pace <= 0:
        raise TapError("pace must be > 0 (or None for as fast as possible)")
    for _ in range(max(1, loops)):
        for path in paths:
            origin_capture: int | None = None
            origin_wall = time.monotonic_ns()
            for batch in iter_raw_batches(Path(path), gateway="tap"):
                ts_col = batch.column("ts_ns").to_pylist()
                lt_col = batch.column("linktype").to_pylist()
                wl_col = batch.column("wire_len").to_pylist()
                data_col = batch.column("data").to_pylist()
                for ts, lt, wl, data in zip(ts_col, lt_col, wl_col, data_col, strict=True):
                    if stop is not None and stop.is_set():
                        return
                    if pace is not None:
                        if origin_capture is None:
                            origin_capture = ts
                        due = origin_wall + int((ts - origin_capture) / pace)
                        delay = due - time.monotonic_ns()
                        if delay > 0:
                            time.sleep(delay / 1e9)
                    stamp = ts if keep_timestamps else time.time_ns()
                    yield Packet(stamp, lt, wl, data)


def load_packets(paths: Iterable[Path]) -> list[Packet]:
    """Every packet of the captures, in file order, held in memory for fixed-rate replay.

    Reading once keeps the file parsing out of a paced run, where the tap shares the CPU
    with the pipeline it is measuring.
    """
    from amlhp.encoders.readers import iter_raw_batches

    out: list[Packet] = []
    for path in paths:
        for batch in iter_raw_batches(Path(path), gateway="tap"):
            out.extend(
                Packet(ts, lt, wl, data)
                for ts, lt, wl, data in zip(
                    batch.column("ts_ns").to_pylist(),
                    batch.column("linktype").to_pylist(),
                    batch.column("wire_len").to_pylist(),
                    batch.column("data").to_pylist(),
                    strict=True,
                )
            )
    if not out:
        raise TapError("the captures hold no packet to replay")
    return out


def rate_packets(
    packets: Sequence[Packet],
    *,
    rate: float,
    count: int,
    stop: threading.Event | None = None,
    pacer: RatePacer | None = None,
) -> Iterator[Packet]:
    """Offer exactly ``count`` packets at ``rate`` packets/s, cycling over ``packets``.

    Each packet is re-stamped with the wall-clock time at which it is offered (the start
    of its capture-to-verdict latency). Sequence numbers are the tap's, so they keep
    increasing across passes over the capture and accounting stays exact.
    """
    if not packets:
        raise TapError("no packet to replay")
    if count < 0:
        raise TapError("count must be >= 0")
    pacer = pacer or RatePacer(rate)
    chunk = pacer.chunk
    n = len(packets)
    for i in range(count):
        if i % chunk == 0:
            if stop is not None and stop.is_set():
                return
            pacer.wait(i)
        yield packets[i % n]._replace(ts_ns=time.time_ns())


#: receive buffer of a live capture: a burst of 64 KB loopback segments (a firmware
#: download) overflows the default ~200 KB at once
CAPTURE_BUFFER_BYTES = 64 * 2**20
_SOL_PACKET, _PACKET_STATISTICS, _SO_RCVBUFFORCE = 263, 6, 33


@dataclass
class CaptureCounters:
    """What the kernel says about a live capture: packets it dropped (buffer full)."""

    kernel_dropped: int = 0


def _read_drops(sock: Any, counters: CaptureCounters) -> None:
    """Add the kernel's drop count since the last read (PACKET_STATISTICS resets it)."""
    raw = sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8)
    counters.kernel_dropped += struct.unpack("II", raw)[1]


def live_packets(
    interface: str,
    *,
    stop: threading.Event,
    max_packets: int | None = None,
    counters: CaptureCounters | None = None,
) -> Iterator[Packet | None]:
    """Capture from a Linux interface with an AF_PACKET socket (needs root).

    Outgoing copies are skipped so that a loopback packet is seen once, as libpcap does.
    ``None`` is yielded when the interface is idle, so that the caller can publish an
    overdue batch. Packets the kernel dropped because the socket's buffer was full are
    added to ``counters`` (a gateway cannot get them back, but it must say so).
    """
    import socket

    counters = counters if counters is not None else CaptureCounters()
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.bind((interface, 0))
    except OSError as exc:
        raise TapError(f"cannot capture on {interface!r}: {exc}") from exc
    try:  # beyond net.core.rmem_max: needs CAP_NET_ADMIN, which a capture has
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, CAPTURE_BUFFER_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CAPTURE_BUFFER_BYTES)
    sock.settimeout(0.1)
    seen = 0
    try:
        while not stop.is_set():
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                _read_drops(sock, counters)
                yield None
                continue
            if address[2] == PACKET_OUTGOING and interface == "lo":
                continue
            yield Packet(time.time_ns(), DLT_EN10MB, len(frame), frame)
            seen += 1
            if max_packets is not None and seen >= max_packets:
                return
    finally:
        _read_drops(sock, counters)
        sock.close()


class Tap:
    """Publishes packets of one gateway as raw batches; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        gateway: str,
        *,
        batch_size: int = 500,
        max_delay_ms: float = 50.0,
        start_seq: int | None = None,
        topic: str | None = None,
        seq_state: SeqState | None = None,
        producer: Any = None,
    ) -> None:
        """``seq_state``: keep the gateway's sequence across restarts
        (:mod:`amlhp.streams.tap_seq`); ``start_seq`` then must not go back, and without it
        the tap continues where the last run ended. Without a state, ``start_seq`` or 0.
        ``producer``: a Kafka producer shared with other taps of this process (a fleet)."""
        from confluent_kafka import Producer

        if not gateway or len(gateway) > 128:
            raise TapError("gateway id must be 1-128 characters")
        self.gateway = gateway
        self.topic = topic or settings.topic_raw
        self.payload_bytes = settings.payload_bytes
        self.stats = TapStats()
        self._seq_state = seq_state
        self.seq_start = (
            seq_state.start(start_seq)
            if seq_state is not None
            else SeqStart(first=start_seq or 0, unsure=None, clean=True)
        )
        if self.seq_start.unsure is not None:
            lo, hi = self.seq_start.unsure
            log.warning(
                "gateway %s: the previous tap was killed; it may have used seqs %d-%d "
                "(a missing one there was never sent or was lost in the kill); "
                "continuing at %d",
                gateway,
                lo,
                hi - 1,
                hi,
            )
        self._seq = self.seq_start.first
        self._schema = raw_schema()
        self._batcher: SizeTimeBatcher[Packet] = SizeTimeBatcher(batch_size, max_delay_ms / 1000.0)
        self._producer = producer or Producer(
            producer_config(settings, client_id=f"amlhp-tap-{gateway}")
        )
        # Prometheus (amlhp.metrics.definitions): updated per batch from the stats' deltas.
        self._metrics = process_metrics()
        self._reported = (0, 0)

    @property
    def next_seq(self) -> int:
        return self._seq

    def _on_delivery(self, err: Any, msg: Any, count: int) -> None:
        if err is not None:
            self.stats.failed_messages += 1
            self.stats.failed_packets += count
            if len(self.stats.errors) < 10:
                self.stats.errors.append(str(err))
            log.error("delivery failed for %d packets: %s", count, err)
            self._metrics.delivery_failures.labels(STEP_TAP).inc()
        else:
            self.stats.delivered_messages += 1
            self.stats.delivered_packets += count
            self._metrics.count_out(STEP_TAP, self.gateway, count, len(msg.value() or b""))

    def add(self, packet: Packet) -> None:
        """Truncate one packet to what the encoder needs and queue it."""
        keep = needed_prefix(packet.linktype, packet.data, self.payload_bytes)
        data = packet.data[:keep]
        self.stats.packets += 1
        self.stats.bytes_captured += len(packet.data)
        batch = self._batcher.add(packet._replace(data=data))
        if batch:
            self._publish(batch)

    def tick(self) -> None:
        """Publish an overdue batch and serve delivery callbacks (call when idle)."""
        self.publish_due()
        self._producer.poll(0)

    def publish_due(self) -> None:
        """Publish the batch being gathered if it is overdue."""
        batch = self._batcher.poll()
        if batch:
            self._publish(batch)

    def publish_rest(self) -> None:
        """Publish what is buffered, whatever its age."""
        rest = self._batcher.drain()
        if rest:
            self._publish(rest)

    def _publish(self, packets: list[Packet]) -> None:
        n = len(packets)
        first = self._seq
        if self._seq_state is not None:
            self._seq_state.reserve(first, first + n)
        self._seq += n
        batch = pa.RecordBatch.from_arrays(
            [
                pa.array([self.gateway] * n, pa.string()),
                pa.array([p.ts_ns for p in packets], pa.int64()),
                pa.array(range(first, first + n), pa.uint64()),
                pa.array([p.linktype for p in packets], pa.uint16()),
                pa.array([p.wire_len for p in packets], pa.uint32()),
                pa.array([p.data for p in packets], pa.binary()),
            ],
            schema=self._schema,
        )
        value = to_ipc(batch)
        self.stats.messages += 1
        self.stats.bytes_sent += len(value)
        seen = (self.stats.packets, self.stats.bytes_captured)
        self._metrics.count_in(
            STEP_TAP, self.gateway, seen[0] - self._reported[0], seen[1] - self._reported[1]
        )
        self._reported = seen
        self._metrics.observe_batch(STEP_TAP, n)

        def delivered(err: Any, msg: Any) -> None:
            self._on_delivery(err, msg, n)

        stamp_ms = capture_timestamp_ms(max(p.ts_ns for p in packets))

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=self.gateway.encode(),
                    value=value,
                    headers={
                        PACKETS_HEADER: str(n).encode(),
                        PUBLISHED_HEADER: str(time.time_ns()).encode(),
                    },
                    timestamp=stamp_ms,
                    on_delivery=delivered,
                )
                break
            except BufferError:
                # Local queue full: serve callbacks until there is room (back-pressure).
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 120.0) -> int:
        """Publish what is buffered and wait for every delivery; returns messages left."""
        self.publish_rest()
        return int(self._producer.flush(timeout_s))

    def close(self) -> None:
        """Record a clean end: the next run of this gateway continues at :attr:`next_seq`."""
        if self._seq_state is not None:
            self._seq_state.close(self._seq)


class Publisher(Protocol):
    """What :func:`run_tap` drives: one gateway's :class:`Tap`, or a fleet of them."""

    @property
    def stats(self) -> TapStats: ...

    def add(self, packet: Packet) -> None: ...

    def tick(self) -> None: ...

    def flush(self, timeout_s: float = 120.0) -> int: ...

    def close(self) -> None: ...


def run_tap(
    tap: Publisher,
    packets: Iterable[Packet | None],
    *,
    stop: threading.Event,
    on_progress: Callable[[TapStats], None] | None = None,
) -> TapStats:
    """Drive a tap from a packet source until it ends or ``stop`` is set, then flush."""
    last_report = time.monotonic()
    try:
        for packet in packets:
            if packet is not None:
                tap.add(packet)
            if stop.is_set():
                break
            now = time.monotonic()
            if packet is None or now - last_report >= 0.2:
                tap.tick()
                if on_progress is not None:
                    on_progress(tap.stats)
                last_report = now
    finally:
        left = tap.flush()
        if left:
            tap.stats.failed_messages += left
            tap.stats.errors.append(f"{left} messages still undelivered at exit")
        tap.close()
        if on_progress is not None:
            on_progress(tap.stats)
    return tap.stats
