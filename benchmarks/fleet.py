"""``amlhp bench fleet``: what grows with the number of gateways.

Every other benchmark feeds 1 to 4 gateways; deployments have thousands. For each fleet
size N the same packets (passes over the demo capture at full speed) go through a fresh
pipeline (worker and sink) as N gateways of one ``amlhp tap --gateways N`` process, and
the run records what a per-gateway cost would show in: capacity (first packet to last
verdict), the tap's messages (a gateway with few packets per second sends small ones),
the resident memory of worker and sink (peak, from ``/proc``), the sink's manifests
(bytes and write time of a flush: the de-duplication marks hold one entry per gateway),
the files per flush (the dataset is partitioned by gateway) and the worker's Prometheus
series (the gateway label is capped). Accounting is exact per gateway, as everywhere.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import PipelineRun, StatusFn, pipeline, quiet
from amlhp.pipeline.dataset import MANIFEST_DIR
from amlhp.settings import Settings
from amlhp.streams.accounting import account
from amlhp.streams.tap_fleet import fleet_gateway_ids, fleet_packet_counts

DEFAULT_SIZES = (4, 1_000, 10_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process (``VmHWM``), MB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _series(port: int) -> int:
    """Sample lines (series) a stage's metrics endpoint serves."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def _manifests(verdict_dir: Path) -> dict[str, Any]:
    bodies = [
        (p.stat().st_size, json.loads(p.read_text()))
        for p in (verdict_dir / MANIFEST_DIR).rglob("*.json")
    ]
    if not bodies:
        return {}
    sizes = sorted(size for size, _ in bodies)
    files = sorted(len(body["files"]) for _, body in bodies)
    writes = sorted(float(body.get("write_s", 0.0)) for _, body in bodies)
    return {
        "flushes": len(bodies),
        "manifest_bytes_max": sizes[-1],
        "manifest_bytes_median": sizes[len(sizes) // 2],
        "files_per_flush_max": files[-1],
        "files_per_flush_median": files[len(files) // 2],
        "write_s_median": writes[len(writes) // 2],
        "write_s_max": writes[-1],
    }


def _one_fleet(
    run: PipelineRun, capture: Path, size: int, loops: int, metrics_port: int, timeout_s: float
) -> dict[str, Any]:
    prefix = f"fleet{size}"
    [tap] = run.run_taps(capture, [prefix], loops=loops, tap_args=("--gateways", str(size)))
    gateways = fleet_gateway_ids(prefix, size)
    expected = {
        g: (0, n) for g, n in zip(gateways, fleet_packet_counts(tap.packets, size), strict=True)
    }
    deadline = time.monotonic() + timeout_s
    while True:  # the dataset is read only once the groups caught up: reading it is work
        run.check_alive()
        sample = run.sampler.last()
        caught_up = sample is not None and sample["t"] > tap.ended_at
        if caught_up and sample is not None and sample.get("lag_records", 1) == 0:
            verdicts, dead = run.outputs(gateways)
            ledger = account(verdicts, dead, expected)
            done = ledger.verdicts + ledger.dead_packets
            run.on_status(f"{size} gateways: {done} of {tap.packets}")
            if ledger.complete:
                break
        if time.monotonic() > deadline:
            verdicts, dead = run.outputs(gateways)
            ledger = account(verdicts, dead, expected)
            break
        time.sleep(2.0)
    scored = verdicts.column("scored_at_ns").to_numpy(zero_copy_only=False)
    span = float(scored.max()) / 1e9 - tap.started_at if len(scored) else 0.0
    worker, sink = run.workers[0].proc.pid, run.sink.proc.pid
    worker_mb, sink_mb = _peak_rss_mb(worker), _peak_rss_mb(sink)
    return {
        "gateways": size,
        "packets": tap.packets,
        "tap_messages": int(tap.summary.get("messages", 0)),
        "packets_per_message": round(tap.packets / max(1, int(tap.summary.get("messages", 1))), 1),
        "capacity_pps": round(tap.packets / span, 1) if span > 0 else None,
        "worker_peak_rss_mb": worker_mb,
        "sink_peak_rss_mb": sink_mb,
        "worker_series": _series(metrics_port),
        "sink": _manifests(run.verdict_dir),
        "accounting": {**ledger.as_dict(), "exact": ledger.complete and ledger.missing == 0},
    }


def run_fleet(
    settings: Settings,
    capture: Path,
    *,
    sizes: tuple[int, ...] = DEFAULT_SIZES,
    loops: int = 2,
    work_dir: Path,
    timeout_s: float = 900.0,
    on_status: StatusFn = quiet,
) -> dict[str, Any]:
    """One fresh pipeline per fleet size; see the module docstring."""
    if not sizes:
        raise BenchmarksError("no fleet size to run")
    results = []
    for size in sizes:
        port = _free_port()
        on_status(f"== fleet of {size:,} gateways")
        with pipeline(
            settings,
            work_dir,
            worker_args=("--metrics-port", str(port)),
            on_status=on_status,
        ) as run:
            results.append(_one_fleet(run, capture, size, loops, port, timeout_s))
    base = results[0]
    for r in results:
        r["memory_per_gateway_kb"] = {
            stage: round((r[key] - base[key]) * 1024 / (r["gateways"] - base["gateways"]), 2)
            if r["gateways"] > base["gateways"] and r[key] and base[key]
            else None
            for stage, key in (("worker", "worker_peak_rss_mb"), ("sink", "sink_peak_rss_mb"))
        }
        if base["capacity_pps"] and r["capacity_pps"]:
            r["capacity_vs_first"] = round(r["capacity_pps"] / base["capacity_pps"], 3)
    return {
        "kind": "fleet",
        "capture": str(capture),
        "loops": loops,
        "machine": machine_facts(),
        "fleets": results,
    }


def fleet_table(doc: dict[str, Any]) -> str:
    """The markdown table of a fleet result."""
    lines = [
        "| gateways | packets | packets/message | capacity (packets/s) | vs first | "
        "worker / sink peak RSS (MB) | memory per gateway, worker / sink (KB) | "
        "files per flush (max) | manifest (KB, max) | flush write (s, median / max) | "
        "worker series | exact |",
        "|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|---|",
    ]
    for r in doc["fleets"]:
        sink = r.get("sink", {})
        per = r.get("memory_per_gateway_kb", {})
        lines.append(
            f"| {r['gateways']:,} | {r['packets']:,} | {r['packets_per_message']} | "
            f"{r['capacity_pps'] or 0:,.0f} | {r.get('capacity_vs_first', '–')} | "
            f"{r['worker_peak_rss_mb']} / {r['sink_peak_rss_mb']} | "
            f"{per.get('worker') or '–'} / {per.get('sink') or '–'} | "
            f"{sink.get('files_per_flush_max', '–')} | "
            f"{round(sink.get('manifest_bytes_max', 0) / 1024, 1)} | "
            f"{sink.get('write_s_median', '–')} / {sink.get('write_s_max', '–')} | "
            f"{r['worker_series']} | {'yes' if r['accounting']['exact'] else 'NO'} |"
        )
    return "\n".join(lines)
