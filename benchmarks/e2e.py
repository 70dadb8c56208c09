"""End to end under fixed offered loads: throughput, latency, lag and exact accounting.

Broker, tap, worker(s) and sink run on this machine. First the pipeline's capacity is
measured the way ``amlhp demo`` measures throughput: a tap replays the capture at full
speed and capacity is the packets divided by the time from the first captured packet to
the last verdict. Then a tap offers fixed rates (fractions of that capacity, or absolute
rates) for a fixed time each. After each load the benchmark keeps the pipeline running
until every packet is accounted for (verdict or dead letter, no duplicate, none
missing), and records:

* achieved throughput: packets / (last verdict - first capture) of that load;
* capture-to-verdict latency: ``scored_at_ns - ts_ns`` of every verdict (the tap stamps
  ``ts_ns`` when it offers the packet, the worker ``scored_at_ns`` when the model decided);
* consumer lag over time, in records (watermark - committed offset, summed over the
  worker's and the sink's groups) and in seconds (age of the oldest unprocessed message);
* the drain: how long after the load stopped the last verdict came, and lag was zero;
* cores used by each process (broker, tap, worker, sink, and the rest of the machine).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from amlhp.benchmarks.exceptions import BenchmarksError
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import (
    Drain,
    PipelineRun,
    StatusFn,
    TapRun,
    latencies_ms,
    latency_summary,
    pipeline,
)
from amlhp.benchmarks.pipeline_run import quiet as _quiet
from amlhp.benchmarks.profiling import finish_profile, py_spy_path, start_profile
from amlhp.benchmarks.sampler import cpu_shares
from amlhp.data import BENCH_CAPTURE
from amlhp.settings import Settings

#: the issue's offered loads, as fractions of the measured capacity
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5)
#: lag (seconds) may grow by at most this much per second of load and still be "bounded"
BOUNDED_GROWTH = 0.1
#: the goals of the benchmark issue on this 2-core machine
GOAL_SUSTAINED_PPS = 15_000.0
GOAL_P99_AT_HALF_MS = 250.0
LATENCY_QUANTILES: tuple[float, ...] = (*range(0, 100, 2), 99.0, 99.5, 99.9, 100.0)


@dataclass
class E2EConfig:
    """What ``amlhp bench e2e`` runs (the defaults are the full benchmark's)."""

    capture: Path = BENCH_CAPTURE
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    rates: tuple[float, ...] = ()  # absolute packets/s; when given, fractions are ignored
    seconds_per_rate: float = 60.0
    capacity_loops: int = 4  # passes over the capture for the full-speed capacity run
    capacity_pps: float | None = None  # skip the capacity run and use this
    workers: int = 1
    partitions: int = 4
    drain_timeout_s: float = 240.0
    sample_interval_s: float = 1.0
    profile: bool = False
    quick: bool = False
    worker_args: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def quick_config(cls, **overrides: Any) -> E2EConfig:
        """A short run (well under a minute) that exercises every part of the benchmark."""
        values: dict[str, Any] = {
            "fractions": (0.5, 1.5),
            "seconds_per_rate": 4.0,
            "capacity_loops": 1,
            "drain_timeout_s": 120.0,
            "quick": True,
        }
        values.update(overrides)
        return cls(**values)


def _per_second(stamps_ns: np.ndarray, origin_s: float, seconds: int) -> list[int]:
    """Counts per whole second since ``origin_s`` (unix), over ``seconds`` bins."""
    if seconds <= 0:
        return []
    rel = stamps_ns / 1e9 - origin_s
    counts, _ = np.histogram(rel, bins=seconds, range=(0, seconds))
    return [int(c) for c in counts]


def _slope(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over ts (``None`` with fewer than 3 points)."""
    if len(ts) < 3 or max(ts) - min(ts) <= 0:
        return None
    a = np.polyfit(np.asarray(ts), np.asarray(ys, dtype=float), 1)
    return float(a[0])


def load_result(
    run: PipelineRun, tap: TapRun, drain: Drain, *, target_pps: float | None, origin: float
) -> dict[str, Any]:
    """Everything one offered load measured (see the module docstring)."""
    ledger = drain.ledger
    verdicts: pa.Table = drain.verdicts
    first_capture = tap.started_at
    last_verdict = tap.ended_at
    if verdicts.num_rows:
        ts = verdicts.column("ts_ns").to_numpy(zero_copy_only=False)
        scored = verdicts.column("scored_at_ns").to_numpy(zero_copy_only=False)
        first_capture = float(ts.min()) / 1e9
        last_verdict = float(scored.max()) / 1e9
    else:
        ts = scored = np.array([], np.int64)
    span = last_verdict - first_capture
    load_s = tap.ended_at - tap.started_at
    in_load = int(
        np.count_nonzero((scored / 1e9 >= tap.started_at) & (scored / 1e9 <= tap.ended_at))
    )
    end = max(drain.accounted_at, last_verdict)
    samples = run.sampler.between(tap.started_at, end)
    load_samples = [s for s in samples if s["t"] <= tap.ended_at]
    slope = _slope(
        [s["t"] for s in load_samples], [float(s.get("lag_seconds", 0.0)) for s in load_samples]
    )
    lat = latencies_ms(verdicts) if verdicts.num_rows else np.array([])
    seconds = max(1, math.ceil(end - tap.started_at))
    exact = (
        ledger.missing == 0
        and ledger.duplicate_verdicts == 0
        and ledger.both == 0
        and ledger.verdicts + ledger.dead_packets == ledger.packets_in
    )
    return {
        "gateway": tap.gateway,
        # the rate exactly as the tap was given it (``offer`` quantises to 1e-3 packets/s)
        "target_pps": target_pps,
        "offered_pps": round(tap.offered_pps, 1),
        "packets": tap.packets,
        "load_seconds": round(load_s, 3),
        "start_offset_s": round(tap.started_at - origin, 3),
        "achieved_pps": round(ledger.packets_in / span, 1) if span > 0 else None,
        "verdicts_per_second_during_load": round(in_load / load_s, 1) if load_s > 0 else None,
        "latency_ms": latency_summary(verdicts),
        "latency_quantiles_ms": [
            [q, round(float(np.percentile(lat, q)), 3)] for q in LATENCY_QUANTILES
        ]
        if len(lat)
        else [],
        "drain_s": round(max(0.0, last_verdict - tap.ended_at), 3),
        "lag_zero_after_s": round(drain.lag_zero_at - tap.ended_at, 3)
        if drain.lag_zero_at
        else None,
        "max_lag_records": max((int(s.get("lag_records", 0)) for s in samples), default=0),
        "max_lag_seconds": max((float(s.get("lag_seconds", 0.0)) for s in samples), default=0.0),
        "lag_growth_s_per_s": round(slope, 4) if slope is not None else None,
        "lag_bounded": slope is not None and slope < BOUNDED_GROWTH,
        "accounting": {**ledger.as_dict(), "exact": exact},
        "cpu_cores": cpu_shares(load_samples),
        "tap_cpu_s": tap.cpu_s,
        "series": {
            "start": round(tap.started_at - origin, 3),
            "offered_per_s": _per_second(ts, tap.started_at, seconds),
            "verdicts_per_s": _per_second(scored, tap.started_at, seconds),
        },
    }


def _profile_targets(run: PipelineRun) -> dict[str, int]:
    targets = {s.name: s.proc.pid for s in run.workers}
    targets["sink"] = run.sink.proc.pid
    return targets


def offer(
    run: PipelineRun,
    cfg: E2EConfig,
    gateway: str,
    *,
    rate: float | None,
    origin: float,
    profile_dir: Path | None = None,
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """One load: a tap at ``rate`` (``None``: full speed), then drain and account."""
    profiles: dict[str, Any] = {}
    procs: dict[str, Any] = {}

    def on_start(tap_pid: int) -> None:
        if profile_dir is None:
            return
        for name, pid in {**_profile_targets(run), "tap": tap_pid}.items():
            procs[name] = start_profile(pid, cfg.seconds_per_rate, profile_dir / f"{name}.txt")

    if rate is None:
        on_status(f"{gateway}: full speed, {cfg.capacity_loops} pass(es) over the capture")
        tap = run.run_tap(cfg.capture, gateway, loops=cfg.capacity_loops)
    else:
        # one value for the tap's argument and the result, so packets == round(rate x seconds)
        rate = round(rate, 3)
        on_status(f"{gateway}: offering {rate:,.0f} packets/s for {cfg.seconds_per_rate:.0f}s")
        tap = run.run_tap(
            cfg.capture, gateway, rate=rate, duration_s=cfg.seconds_per_rate, on_start=on_start
        )
    drain = run.wait_drained(tap, cfg.drain_timeout_s)
    result = load_result(run, tap, drain, target_pps=rate, origin=origin)
    if profile_dir is not None:
        for name, proc in procs.items():
            profiles[name] = finish_profile(proc, profile_dir / f"{name}.txt")
        result["profile"] = profiles
    return said_if_inexact(result, gateway, on_status)


#: how long a flow worker beside the pipeline may take after the packet pipeline drained
FLOWS_TIMEOUT_S = 600.0


def capacity(
    settings: Settings,
    cfg: E2EConfig,
    work_dir: Path,
    name: str,
    on_status: StatusFn = _quiet,
    *,
    flow_worker: bool = False,
) -> dict[str, Any]:
    """One full-speed capacity run on ``settings``'s broker (its own topics and stages).
    With ``flow_worker``, the flow worker reads the same raw topic, and
    ``flow_worker_pps`` is its pace: the packets over the time from the tap's start to
    its group's lag at 0."""
    with pipeline(
        settings,
        work_dir,
        workers=cfg.workers,
        partitions=cfg.partitions,
        flow_worker=flow_worker,
        on_status=on_status,
    ) as run:
        result = offer(run, cfg, name, rate=None, origin=time.time(), on_status=on_status)
        if flow_worker:
            tap = run.taps[-1]
            done = run.lag_zero_at("flows", tap.ended_at, FLOWS_TIMEOUT_S)
            result["flow_worker_pps"] = round(tap.packets / (done - tap.started_at), 1)
        return result


def alternate(
    modes: dict[str, Callable[[str], dict[str, Any]]],
    rounds: int,
    on_status: StatusFn = _quiet,
    extra: tuple[str, ...] = (),
) -> dict[str, list[dict[str, Any]]]:
    """Each mode's capacity run (``modes[mode](name)``, a :func:`capacity` result), in
    turn, ``rounds`` times, so that a slow minute of a shared machine does not land on one
    side only. Per mode, each run's packets/s, packets and accounting, and the result's
    ``extra`` fields (None where a run has none)."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for i in range(rounds):
        for mode, run_one in modes.items():
            on_status(f"round {i + 1}/{rounds}: {mode}")
            result = run_one(f"{mode}-{i + 1}")
            runs[mode].append(
                {
                    "achieved_pps": result["achieved_pps"],
                    "packets": result["packets"],
                    "exact": result["accounting"]["exact"],
                    "accounting": result["accounting"],
                    **{k: result.get(k) for k in extra},
                }
            )
    return runs


def median_pps(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """Per mode of :func:`alternate`, the median packets/s."""
    return {m: statistics.median(r["achieved_pps"] or 0.0 for r in rs) for m, rs in runs.items()}


def said_if_inexact(result: dict[str, Any], who: str, on_status: StatusFn) -> dict[str, Any]:
    """``result``, after a status line where its accounting is not exact (a lost,
    duplicated or doubly-counted packet): the figures of such a run do not count."""
    if not result["accounting"]["exact"]:
        on_status(f"{who}: accounting NOT exact: {result['accounting']}")
    return result


def run_e2e(
    settings: Settings,
    cfg: E2EConfig,
    *,
    work_dir: Path = Path("out/bench"),
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """Capacity, then each offered load; returns the result document (see module doc)."""
    if not cfg.capture.exists():
        raise BenchmarksError(f"no capture at {cfg.capture}")
    if cfg.profile and py_spy_path() is None:
        raise BenchmarksError("--profile needs py-spy (pip install py-spy, in the dev extras)")
    started = time.time()
    doc: dict[str, Any] = {
        "kind": "e2e",
        "what": "amlhp end to end: broker, tap, worker(s) and sink on this machine",
        "capture": str(cfg.capture),
        "workers": cfg.workers,
        "partitions": cfg.partitions,
        "seconds_per_rate": cfg.seconds_per_rate,
        "quick": cfg.quick,
        "machine": machine_facts(),
        "started_at": round(started, 3),
    }
    with pipeline(
        settings,
        work_dir,
        workers=cfg.workers,
        partitions=cfg.partitions,
        sample_interval_s=cfg.sample_interval_s,
        worker_args=cfg.worker_args,
        on_status=on_status,
    ) as run:
        origin = time.time()
        doc["startup_s"] = round(origin - started, 3)
        capacity_doc: dict[str, Any] | None = None
        if cfg.capacity_pps is None:
            capacity_doc = offer(
                run, cfg, "capacity", rate=None, origin=origin, on_status=on_status
            )
            capacity = capacity_doc["achieved_pps"] or 0.0
            if capacity <= 0:
                raise BenchmarksError("capacity run produced no verdict")
        else:
            capacity = cfg.capacity_pps
        rates = list(cfg.rates) or [f * capacity for f in cfg.fractions]
        fractions = [r / capacity for r in rates]
        on_status(f"capacity {capacity:,.0f} packets/s; offering {[round(r) for r in rates]}")
        loads = []
        profile_at = int(np.argmin([abs(f - 1.0) for f in fractions])) if cfg.profile else -1
        for i, (rate, fraction) in enumerate(zip(rates, fractions, strict=True)):
            gateway = f"load{i + 1}-{round(fraction * 100)}pct"
            profile_dir = work_dir / f"profile-{run.run_id}" if i == profile_at else None
            result = offer(
                run,
                cfg,
                gateway,
                rate=rate,
                origin=origin,
                profile_dir=profile_dir,
                on_status=on_status,
            )
            result["fraction_of_capacity"] = round(fraction, 3)
            loads.append(result)
        samples = run.sampler.between(origin, time.time())
    doc.update(
        {
            "capacity": capacity_doc,
            "capacity_packets_per_second": round(capacity, 1),
            "offered_rates": [round(r, 1) for r in rates],
            "fractions_of_capacity": [round(f, 3) for f in fractions],
            "loads": loads,
            "lag_series": [
                {k: v for k, v in s.items() if not k.startswith("cpu_")}
                | {"t": round(s["t"] - origin, 3)}
                for s in samples
            ],
            "sampler_errors": run.sampler.errors,
            "elapsed_s": round(time.time() - started, 1),
        }
    )
    doc.update(summarise(doc))
    return doc


def summarise(doc: dict[str, Any]) -> dict[str, Any]:
    """Headline figures and the issue's goals, from the per-load results."""
    loads = doc["loads"]
    sustained = [
        ld["achieved_pps"]
        for ld in loads
        if ld["lag_bounded"] and ld["accounting"]["exact"] and ld["achieved_pps"]
    ]
    half = min(loads, key=lambda ld: abs(ld["fraction_of_capacity"] - 0.5), default=None)
    p99_half = half["latency_ms"].get("p99") if half else None
    e2e = doc["capacity_packets_per_second"]
    best = max(sustained, default=None)
    return {
        "end_to_end_packets_per_second": e2e,
        "sustained_packets_per_second": best,
        "all_exact": all(ld["accounting"]["exact"] for ld in loads)
        and (doc["capacity"] is None or doc["capacity"]["accounting"]["exact"]),
        "goals": {
            "sustained_pps": {
                "goal": GOAL_SUSTAINED_PPS,
                "measured": best,
                "met": best is not None and best >= GOAL_SUSTAINED_PPS,
            },
            "p99_ms_at_half_capacity": {
                "goal": GOAL_P99_AT_HALF_MS,
                "measured": p99_half,
                "fraction": half["fraction_of_capacity"] if half else None,
                "met": p99_half is not None and p99_half <= GOAL_P99_AT_HALF_MS,
            },
        },
    }
