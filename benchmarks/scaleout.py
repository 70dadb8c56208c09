"""Scale-out: capacity with 1 and with 2 workers in one consumer group.

Workers of one Faust app share the topics' partitions (a multi-partition topic is what
lets a second worker take work), so the same full-speed run as the end-to-end capacity
measure is repeated with each worker count on a fresh pipeline. On a 2-core machine
that also hosts the broker, the tap and the sink, the second worker competes for the
same cores: the figure says what scaling out buys here, not on a real cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amlhp.benchmarks.e2e import E2EConfig, offer
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import pipeline
from amlhp.settings import Settings

StatusFn = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


def run_scaleout(
    settings: Settings,
    *,
    worker_counts: tuple[int, ...] = (1, 2),
    partitions: int = 4,
    capacity_loops: int = 4,
    work_dir: Path = Path("out/bench"),
    quick: bool = False,
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """Full-speed capacity per worker count; one fresh pipeline each."""
    rows: list[dict[str, Any]] = []
    cfg = E2EConfig(capacity_loops=capacity_loops, partitions=partitions, quick=quick)
    for workers in worker_counts:
        with pipeline(
            settings, work_dir, workers=workers, partitions=partitions, on_status=on_status
        ) as run:
            result = offer(
                run, cfg, f"scaleout-{workers}w", rate=None, origin=time.time(), on_status=on_status
            )
        rows.append(
            {
                "workers": workers,
                "capacity_pps": result["achieved_pps"],
                "packets": result["packets"],
                "latency_ms": result["latency_ms"],
                "cpu_cores": result["cpu_cores"],
                "exact": result["accounting"]["exact"],
                "accounting": result["accounting"],
            }
        )
        on_status(f"{workers} worker(s): {result['achieved_pps']:,.0f} packets/s")
    base = rows[0]["capacity_pps"] or 0.0
    for row in rows:
        row["speedup"] = (
            round(row["capacity_pps"] / base, 3) if base and row["capacity_pps"] else None
        )
    return {
        "kind": "scaleout",
        "what": "capacity with 1 vs 2 workers in one consumer group (full-speed tap)",
        "partitions": partitions,
        "quick": quick,
        "rows": rows,
        "machine": machine_facts(),
    }
