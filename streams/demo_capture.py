"""Build the committed demo capture from the public captures (benign and attacks).

A few hundred to a few thousand packets are taken from the start of several public
captures of different classes, their timestamps re-based to a common start and merged
in time order into one Ethernet pcap, so a replay interleaves benign and attack
traffic as a gateway would see it. Linux cooked (SLL) frames are rewritten with an
Ethernet header carrying the same EtherType (MAC addresses zero); nothing else is
changed. A JSON manifest beside the capture records the source of every packet.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amlhp.streams.exceptions import StreamsError

DLT_EN10MB = 1
DLT_LINUX_SLL = 113

#: (path relative to the public data folder, label, packets taken)
DEMO_SOURCES: tuple[tuple[str, str, int], ...] = (
    ("mqttset_reduced/benign-5mb/benign-5mb-test.pcap", "mqtt_benign", 3000),
    ("mqttset_reduced/bruteforce.pcapng", "mqtt_bruteforce", 1500),
    ("mqttset_reduced/malformed.pcap", "mqtt_malformed", 1500),
    ("mqttset_reduced/slowite.pcap", "mqtt_slowite_dos", 1500),
    ("mqttset_reduced/malariados.pcap", "mqtt_malaria_dos", 1000),
    ("stopddos/pkt.TCP.synflood.spoofed.pcap", "dos_synflood", 2000),
    ("stopddos/amp.TCP.reflection.SYNACK.pcap", "ddos_reflection_synack", 1500),
    ("stopddos/amp.UDP.isakmp.pcap", "ddos_udp_amplification", 1500),
)
BENIGN_IOT_DIR = "iot_sentinel"
BENIGN_IOT_PACKETS = 3000


@dataclass(frozen=True)
class _Frame:
    ts_ns: int
    order: int
    data: bytes
    wire_len: int


def _to_ethernet(linktype: int, data: bytes) -> bytes | None:
    if linktype == DLT_EN10MB:
        return data
    if linktype == DLT_LINUX_SLL and len(data) >= 16:
        ethertype = data[14:16]
        return b"\x00" * 12 + ethertype + data[16:]
    return None


def _frames(path: Path, limit: int, source_index: int) -> Iterator[_Frame]:
    from amlhp.encoders.readers import iter_raw_batches

    taken = 0
    base: int | None = None
    for batch in iter_raw_batches(path, gateway="demo"):
        cols = batch.to_pydict()
        for ts, lt, wl, data in zip(
            cols["ts_ns"], cols["linktype"], cols["wire_len"], cols["data"], strict=True
        ):
            frame = _to_ethernet(lt, data)
            if frame is None:
                continue
            base = ts if base is None else base
            yield _Frame(ts - base, source_index, frame, wl - (len(data) - len(frame)))
            taken += 1
            if taken >= limit:
                return


def build_demo_capture(public: Path, out: Path) -> dict[str, object]:
    """Write ``out`` (pcap) and ``out.with_suffix('.json')`` (manifest); return the manifest."""
    sources = [(public / rel, label, n) for rel, label, n in DEMO_SOURCES]
    sentinel = sorted((public / BENIGN_IOT_DIR).rglob("*.pcap"))
    if not sentinel or not all(p.exists() for p, _, _ in sources):
        raise StreamsError(f"public captures not found under {public}")
    per_file = max(1, BENIGN_IOT_PACKETS // 30)
    sentinel_sources = [
        (p, "benign_iot", per_file) for p in sentinel[:: max(1, len(sentinel) // 30)]
    ]
    all_sources = sources + sentinel_sources
    streams = [_frames(p, n, i) for i, (p, _, n) in enumerate(all_sources)]
    counts = [0] * len(all_sources)
    out.parent.mkdir(parents=True, exist_ok=True)
    start_s = 1_700_000_000
    with open(out, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, DLT_EN10MB))
        for frame in heapq.merge(*streams, key=lambda f: (f.ts_ns, f.order)):
            ts = start_s * 1_000_000_000 + frame.ts_ns
            sec, nsec = divmod(ts, 1_000_000_000)
            fh.write(struct.pack("<IIII", sec, nsec, len(frame.data), frame.wire_len))
            fh.write(frame.data)
            counts[frame.order] += 1
    by_label: dict[str, int] = {}
    for (_path, label, _), n in zip(all_sources, counts, strict=True):
        by_label[label] = by_label.get(label, 0) + n
    manifest: dict[str, object] = {
        "capture": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "packets": sum(counts),
        "packets_by_label": by_label,
        "sources": [
            {"file": str(path.relative_to(public)), "label": label, "packets": n}
            for (path, label, _), n in zip(all_sources, counts, strict=True)
            if n
        ],
        "note": "built by `amlhp demo-capture` from the public captures; SLL frames "
        "rewritten to Ethernet, timestamps re-based per source and merged",
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
