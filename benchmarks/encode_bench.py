"""Encoding throughput: packets per second of the fast and the reference encoder.

Real packets from the public captures, cut into batches of ``batch_size`` (1,000 by default,
the size the pipeline uses), are encoded ``repeat`` times; the best run counts, because on a
shared machine the slower runs measure the neighbours. Reading and decoding the captures is
not timed; encoding is timed end to end, Arrow output included. The reference encoder runs
on a smaller sample (it is ~20x slower).

IPv6 costs are measured apart (``ipv6_share``): the encoded IPv4 and IPv6 packets of the
same batches are re-dealt into an IPv4-only set and a mixed set of the same size in which
every ``1 / ipv6_share``-th packet is IPv6 (the captures' few IPv6 packets reused), and
both are timed the same way, interleaved, best run each.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from amlhp.benchmarks.exceptions import BenchmarksError

#: the public captures beside the checkout, relative to the working directory (the default
#: home, where ``make`` runs), like ``amlhp demo-capture --public``
DEFAULT_DATA: Path = Path("..") / "shared" / "data" / "public"


@dataclass
class EncodeBenchResult:
    """What one benchmark run measured."""

    packets: int
    batch_size: int
    batches: int
    repeat: int
    payload_bytes: int
    fast_pps: float
    fast_runs_pps: list[float]
    reference_packets: int
    reference_pps: float
    speedup: float
    statuses: dict[str, int]
    mixed: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def machine_info() -> dict[str, Any]:
    """Where the figures were taken: CPU model, cores usable, Python and numpy versions."""
    import numpy as np

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass  # not Linux: platform.processor() is the best we have
    return {
        "cpu": model,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pyarrow": pa.__version__,
    }


def load_batches(data: Path, packets: int, batch_size: int) -> list[pa.RecordBatch]:
    """Full batches spread evenly over all captures under ``data`` (file order).

    ``packets`` <= 0 takes every full batch.
    """
    from amlhp.encoders.capture import expand_paths
    from amlhp.encoders.readers import iter_raw_batches

    if not data.is_dir():
        raise BenchmarksError(f"no capture folder at {data} (pass --data)")
    batches = [
        batch
        for path in expand_paths([data])
        for batch in iter_raw_batches(path, batch_size=batch_size)
        if batch.num_rows == batch_size
    ]
    if not batches:
        raise BenchmarksError(f"no full batch of {batch_size} packets in {data}")
    wanted = len(batches) if packets <= 0 else max(1, min(len(batches), packets // batch_size))
    step = len(batches) / wanted
    return [batches[int(i * step)] for i in range(wanted)]


def _best_pps(batches: list[pa.RecordBatch], config: Any, repeat: int) -> float:
    from amlhp.encoders.fast import encode_batch

    total = sum(b.num_rows for b in batches)
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        for batch in batches:
            encode_batch(batch, config)
        best = max(best, total / (time.perf_counter() - start))
    return best


def mixed_ipv6_speed(
    batches: list[pa.RecordBatch], config: Any, share: float, repeat: int
) -> dict[str, Any]:
    """Packets/s on IPv4-only batches and on batches with ``share`` IPv6 packets (module
    docstring); empty when the batches hold no IPv6 packet."""
    import numpy as np
    import pyarrow.compute as pc

    from amlhp.encoders.fast import encode_batch

    if not batches or not 0 < share <= 1:
        return {}
    table = pa.Table.from_batches(batches)
    encoded = pa.Table.from_batches([encode_batch(b, config) for b in batches])
    ok = pc.equal(encoded.column("status"), "ok")
    v6 = pc.and_(ok, pc.fill_null(pc.match_substring(encoded.column("src_ip"), ":"), False))
    v4 = pc.and_(ok, pc.invert(v6))
    six = np.flatnonzero(v6.to_numpy(zero_copy_only=False))
    four = np.flatnonzero(v4.to_numpy(zero_copy_only=False))
    if not len(six) or not len(four):
        return {}
    size, every = len(four), max(1, round(1 / share))
    mixed = np.where(
        np.arange(size) % every == 0, six[np.arange(size) % len(six)], four[np.arange(size)]
    )
    width = batches[0].num_rows

    def dealt(rows: Any) -> list[pa.RecordBatch]:
        return table.take(pa.array(rows)).combine_chunks().to_batches(max_chunksize=width)

    only4, with6 = dealt(four), dealt(mixed)
    runs4, runs6 = [], []
    for _ in range(repeat):
        runs4.append(_best_pps(only4, config, 1))
        runs6.append(_best_pps(with6, config, 1))
    return {
        "ipv6_share": round(float((np.arange(size) % every == 0).mean()), 4),
        "packets": size,
        "distinct_ipv6_packets": len(six),
        "ipv4_only_pps": max(runs4),
        "mixed_pps": max(runs6),
        "mixed_vs_ipv4_only": max(runs6) / max(runs4),
    }


def run_encode_bench(
    data: Path = DEFAULT_DATA,
    *,
    packets: int = 100_000,
    batch_size: int = 1000,
    repeat: int = 5,
    reference_packets: int = 5000,
    payload_bytes: int = 64,
    ipv6_share: float = 0.2,
) -> EncodeBenchResult:
    """Measure both encoders; see the module docstring for the method."""
    from amlhp.encoders.fast import encode_batch
    from amlhp.encoders.layout import EncoderConfig
    from amlhp.encoders.reference import encode_packet

    if repeat < 1 or batch_size < 1:
        raise BenchmarksError("repeat and batch size must be at least 1")
    config = EncoderConfig(payload_bytes=payload_bytes)
    batches = load_batches(data, packets, batch_size)
    total = sum(b.num_rows for b in batches)
    for batch in batches[:3]:
        encode_batch(batch, config)  # warm caches and lazily built tables
    runs = []
    statuses: dict[str, int] = {}
    for _ in range(repeat):
        start = time.perf_counter()
        encoded = [encode_batch(batch, config) for batch in batches]
        runs.append(total / (time.perf_counter() - start))
    for batch in encoded:
        for item in batch.column("status").value_counts().to_pylist():
            statuses[item["values"]] = statuses.get(item["values"], 0) + item["counts"]

    sample: list[tuple[int, bytes]] = []
    for batch in batches:
        linktypes = batch.column("linktype").to_pylist()
        sample.extend(zip(linktypes, batch.column("data").to_pylist(), strict=True))
        if len(sample) >= reference_packets:
            break
    sample = sample[: max(1, reference_packets)]
    start = time.perf_counter()
    for linktype, frame in sample:
        encode_packet(linktype, frame, config)
    reference_pps = len(sample) / (time.perf_counter() - start)
    fast = max(runs)
    return EncodeBenchResult(
        packets=total,
        batch_size=batch_size,
        batches=len(batches),
        repeat=repeat,
        payload_bytes=payload_bytes,
        fast_pps=fast,
        fast_runs_pps=runs,
        reference_packets=len(sample),
        reference_pps=reference_pps,
        speedup=fast / reference_pps,
        statuses=statuses,
        mixed=mixed_ipv6_speed(batches, config, ipv6_share, repeat),
        machine=machine_info(),
    )
