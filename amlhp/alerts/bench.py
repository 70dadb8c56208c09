"""``amlhp bench alerts``: the alert engine's verdicts per second on one core, and its state
per tracked host.

* **Throughput.** The lab demo capture is scored once; its verdicts are then replayed
  through the engine ``copies`` times as that many gateways (their own ``seq`` marks),
  in batches of ``batch_size``, with a store that serialises every record it is given to
  JSON, as the stream's Faust table does for its changelog. The process is pinned to one
  core where the OS allows it. The figure is verdicts over engine seconds (scoring not
  included: the worker did that).
* **State.** The JSON size of each host's behaviour profile (what the changelog carries
  per host: the live 10 s window, the minutes and the hour tallies) and of its hour tally
  alone, over the demo's hosts, and for a worst case built here: a host that in one hour
  reaches 20,000 addresses on 2,000 ports, sends 20,000 DNS names and beacons to many
  peers, so that every sketch and capped map is full.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pyarrow as pa

from amlhp.alerts.engine import Engine, Store
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.profile import Profile, beacon


class JsonTable(MutableMapping[str, Any]):
    """A dict that serialises each value set, as a Faust table's changelog does."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.bytes_written = 0

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.bytes_written += len(json.dumps(value))
        self.data[key] = value

    def __delitem__(self, key: str) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def _copies(batches: list[pa.RecordBatch], copies: int) -> Iterator[pa.RecordBatch]:
    for n in range(copies):
        for batch in batches:
            idx = batch.schema.get_field_index("gateway")
            name = pa.array([f"bench-{n}"] * batch.num_rows, pa.string())
            yield batch.set_column(idx, "gateway", name)


def worst_case_profile(policy: AlertPolicy) -> Profile:
    """A host whose hour tally holds every sketch and capped map full."""
    prof = Profile()
    for window in range(360):
        t = prof.seconds
        for i in range(56):
            k = window * 56 + i
            t.note("dsts", f"10.{k // 65536 % 256}.{k // 256 % 256}.{k % 256}", policy.max_tracked)
            t.note("lan", f"10.{k // 65536 % 256}.{k // 256 % 256}.{k % 256}", policy.max_tracked)
            t.note("ports", str(k % 2000), policy.max_tracked)
            t.note("names", f"n{k}.example.org", policy.max_tracked)
            t.note("senders", f"172.16.{k // 256 % 256}.{k % 256}", policy.max_tracked)
            t.services[f"10.0.0.{i % 32} {k % 40}"] = t.services.get(f"10.0.0.{i % 32} 22", 0) + 1
            t.domains[f"d{i % 16}.example.org"] = 1
            beacon(prof.hour.beacons, f"10.0.1.{i % 8} 443", window * 10**10 + i, 8)
        t.out, t.evidence = 56, {"scan": [56, 50.0], "c2": [1, 0.9]}
        prof.roll_up(minutes_window=window // 30, hour_window=0)
    return prof


def run_alert_bench(
    batches: list[pa.RecordBatch], copies: int, batch_size: int, policy: AlertPolicy
) -> dict[str, Any]:
    """Throughput and state figures (see the module docstring)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    table = pa.Table.from_batches(batches).combine_chunks()
    chunks = table.to_batches(max_chunksize=batch_size)
    store = JsonTable()
    engine = Engine(policy, Store(store), model_version="bench")
    verdicts, rows = 0, 0
    started = time.perf_counter()
    for batch in _copies(chunks, copies):
        rows += len(engine.process(batch, wall_s=0.0))
        verdicts += batch.num_rows
    rows += len(engine.flush_all("end_of_input"))
    seconds = time.perf_counter() - started
    profiles = [v["v"] for k, v in store.data.items() if k.startswith("p|") and v["v"]]
    sizes = [len(json.dumps(p)) for p in profiles]
    hours = [len(json.dumps(p["hour"])) for p in profiles]
    worst = worst_case_profile(policy).to_json()
    return {
        "verdicts": verdicts,
        "seconds": round(seconds, 3),
        "verdicts_per_s": round(verdicts / seconds),
        "alert_rows": rows,
        "batch_size": batch_size,
        "changelog_bytes_per_verdict": round(store.bytes_written / max(verdicts, 1), 1),
        "hosts": len(sizes),
        "host_state_bytes_mean": round(sum(sizes) / max(len(sizes), 1)),
        "host_state_bytes_max": max(sizes, default=0),
        "host_state_bytes_worst_case": len(json.dumps(worst)),
        "hour_state_bytes_max": max(hours, default=0),
        "hour_state_bytes_worst_case": len(json.dumps(worst["hour"])),
    }
