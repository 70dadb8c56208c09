"""``amlhp extract``: the packets behind an incident, as a pcap Wireshark opens.

The raw topic holds what the taps kept of every packet (headers and the first P payload
bytes) with its capture time and wire length. An incident names its gateway, host and
time span (the latest revision on the alert topic); the extract reads the raw topic's
messages of that span (Kafka's offsets-for-times on the taps' capture-time stamps, the
plan of ``amlhp replay``: :func:`amlhp.streams.replay_plan.plan_replay`), keeps the
gateway's packets captured in ``[from, to]`` whose source or destination is the host
(addresses from the project's one parser, :func:`amlhp.encoders.fast.encode_batch`), and
writes them in ``seq`` order to a nanosecond pcap: each record with its original
timestamp, its captured length and its wire length, and the file's snap length the
longest captured frame, so a reader sees the packets were cut at the tap.

Packets of a link type other than the first kept one are counted and left out (a pcap
has one link type). Non-IP frames (ARP) have no host and are not extracted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from amlhp.alerts.exceptions import AlertsError
from amlhp.pipeline.incidents import find_incident
from amlhp.settings import Settings
from amlhp.wire import RAW, BatchDecodeError, from_ipc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """Which packets: a gateway's, with ``host`` at either end, captured in [from, to]."""

    gateway: str
    host: str
    from_ns: int
    to_ns: int


@dataclass
class ExtractStats:
    packets: int = 0
    scanned: int = 0
    other_linktype: int = 0
    snaplen: int = 0
    linktype: int | None = None
    seqs: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_seq"] = self.seqs[0] if self.seqs else None
        out["last_seq"] = self.seqs[-1] if self.seqs else None
        del out["seqs"]
        return out


def incident_selection(settings: Settings, incident: str, timeout_s: float = 30.0) -> Selection:
    """The gateway, host and span of an incident's latest revision on the alert topic."""
    row = find_incident(settings, incident, timeout_s)
    return Selection(row["gateway"], row["host"], row["first_seen_ns"], row["last_seen_ns"])


def _matching(raw: pa.RecordBatch, selection: Selection) -> pa.RecordBatch:
    """The rows of ``raw`` that the selection names."""
    from amlhp.encoders.fast import encode_batch

    ts = raw.column("ts_ns").to_numpy(zero_copy_only=False)
    gateways = np.asarray(raw.column("gateway").to_pylist(), dtype=object)
    near = (gateways == selection.gateway) & (ts >= selection.from_ns) & (ts <= selection.to_ns)
    if not near.any():
        return raw.slice(0, 0)
    candidates = raw.filter(pa.array(near))
    encoded = encode_batch(candidates)
    src = np.asarray(encoded.column("src_ip").to_pylist(), dtype=object)
    dst = np.asarray(encoded.column("dst_ip").to_pylist(), dtype=object)
    return candidates.filter(pa.array((src == selection.host) | (dst == selection.host)))


def extract(
    settings: Settings, selection: Selection, out: Path, timeout_s: float = 30.0
) -> ExtractStats:
    """Write the selected packets of the raw topic to ``out`` (see the module docstring)."""
    import dpkt

    from amlhp.streams.replay_plan import Window, plan_replay

    window = Window(selection.from_ns, selection.to_ns + 1, (selection.gateway,))
    plan = plan_replay(settings, settings.topic_raw, "raw", window, timeout_s=timeout_s)
    stats = ExtractStats()
    kept: list[pa.RecordBatch] = []
    for batch in _read_plan(settings, plan, timeout_s):
        stats.scanned += batch.num_rows
        hit = _matching(batch, selection)
        if hit.num_rows:
            kept.append(hit)
    table = pa.Table.from_batches(kept, schema=kept[0].schema) if kept else None
    rows = table.sort_by("seq").to_pylist() if table is not None else []
    links = Counter(int(r["linktype"]) for r in rows)
    stats.linktype = links.most_common(1)[0][0] if links else 1
    chosen = [r for r in rows if int(r["linktype"]) == stats.linktype]
    stats.other_linktype = len(rows) - len(chosen)
    stats.snaplen = max((len(r["data"]) for r in chosen), default=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    with part.open("wb") as fh:
        head = dpkt.pcap.LEFileHdr(
            magic=dpkt.pcap.TCPDUMP_MAGIC_NANO,
            snaplen=max(stats.snaplen, 1),
            linktype=stats.linktype,
        )
        fh.write(bytes(head))
        for r in chosen:
            data = bytes(r["data"])
            sec, nsec = divmod(int(r["ts_ns"]), 1_000_000_000)
            wire = max(int(r["wire_len"] or 0), len(data))
            record = dpkt.pcap.LEPktHdr(tv_sec=sec, tv_usec=nsec, caplen=len(data), len=wire)
            fh.write(bytes(record) + data)
            stats.seqs.append(int(r["seq"]))
    part.replace(out)
    stats.packets = len(chosen)
    return stats


def _read_plan(settings: Settings, plan: Any, timeout_s: float) -> list[pa.RecordBatch]:
    """The raw batches of the plan's offset ranges (undecodable messages skipped, logged)."""
    from confluent_kafka import Consumer, TopicPartition

    from amlhp.pipeline.kafka_io import consumer_config

    ranges = [r for r in plan.partitions if r.messages]
    if not ranges:
        return []
    config = consumer_config(settings, f"{settings.consumer_group}-extract", "amlhp-extract")
    consumer = Consumer(config)
    out: list[pa.RecordBatch] = []
    try:
        consumer.assign([TopicPartition(plan.topic, r.partition, r.start) for r in ranges])
        ends = {r.partition: r.end for r in ranges}
        idle = 0.0
        while ends and idle < timeout_s:
            msgs = consumer.consume(num_messages=500, timeout=0.5)
            idle = 0.0 if msgs else idle + 0.5
            for msg in msgs:
                if msg.error() is not None:
                    continue
                part, offset = msg.partition() or 0, msg.offset() or 0
                if part not in ends or offset >= ends[part]:
                    continue
                if offset + 1 >= ends[part]:
                    del ends[part]
                try:
                    out.append(from_ipc(msg.value() or b"", RAW))
                except BatchDecodeError as exc:
                    log.warning("raw message %d:%d skipped: %s", part, offset, exc)
        if ends:
            raise AlertsError(f"the raw topic stopped short of offsets {ends}")
    finally:
        consumer.close()
    return out


__all__ = ["ExtractStats", "Selection", "extract", "incident_selection"]
