"""``amlhp bench flows``: what one flow worker can do, without Kafka, and what it holds.

Why without Kafka: the flow worker's agent does its work in one executor thread
(:class:`~amlhp.flows.worker.FlowRuntime`: assemble, close, score, fold the inventory,
list table writes); this measures that thread on the raw batches a tap publishes (the
capture cut to the tap's payload bytes, in tap-sized messages), so the figure is its
capacity in packets per second on one core. The Kafka round trips and Faust's own costs
come on top; ``amlhp demo`` and the broker tests run the real thing.

Memory per tracked device: the bytes ``tracemalloc`` sees allocated by the runtime's state
(open flows, each device's context flows with their cached branch outputs, inventory
entries) at the end of the capture, before the last flows close, divided by the devices.
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa


def bench_flows(
    capture: Path,
    model: Path,
    *,
    batch_size: int = 500,
    repeat: int = 2,
    explain_every: int | None = None,
    gateway: str = "bench-gw",
    attack_model: str | None = None,
) -> dict[str, Any]:
    """Best of ``repeat`` runs of the flow runtime over ``capture`` (module docstring),
    with the attack model beside the device model as the worker runs it
    (``attack_model``: as its ``--attack-model``)."""
    from amlhp.encoders.readers import iter_raw_batches
    from amlhp.flows.artifact import load_attack_model, load_flow_model
    from amlhp.flows.assembler import FlowAssembler
    from amlhp.flows.online import DEFAULT_EXPLAIN_EVERY, FlowScorer
    from amlhp.flows.worker import FlowRuntime

    explain_every = DEFAULT_EXPLAIN_EVERY if explain_every is None else explain_every
    fm = load_flow_model(model)
    attack = load_attack_model(attack_model, fm.config)
    cut = FlowAssembler(fm.config)
    batches = [
        cut.as_tapped(raw) for raw in iter_raw_batches(capture, gateway, batch_size=batch_size)
    ]
    packets = sum(b.num_rows for b in batches)
    held, devices = _memory(fm, attack, batches, explain_every, gateway)
    runs: list[dict[str, Any]] = []
    for _ in range(repeat):
        scorer = FlowScorer(fm, attack=attack, explain_every=explain_every)
        runtime = FlowRuntime(fm.config, scorer, 10.0)
        runtime.load(gateway, [], 0)
        gc.collect()
        start = time.perf_counter()
        flows = sum(_step(runtime, raw) for raw in batches) + _close(runtime)
        seconds = time.perf_counter() - start
        runs.append(
            {
                "seconds": round(seconds, 3),
                "packets_per_s": round(packets / seconds, 1),
                "flows": flows,
                "flows_per_s": round(flows / seconds, 1),
            }
        )
    best = max(runs, key=lambda r: r["packets_per_s"])
    return {
        "capture": str(capture),
        "model": fm.version,
        "attack_model": attack.version if attack is not None else None,
        "packets": packets,
        "batch_size": batch_size,
        "explain_every": explain_every,
        "payload_bytes": fm.config.payload_bytes,
        "runs": runs,
        "devices": devices,
        "bytes_per_device": round(held / max(devices, 1)),
        **best,
    }


def _memory(
    fm: Any, attack: Any, batches: list[pa.RecordBatch], explain_every: int, gateway: str
) -> tuple[int, int]:
    """(bytes the runtime holds before its last flows close, devices tracked), traced
    (a run of its own: tracing slows Python down several times)."""
    from amlhp.flows.online import FlowScorer
    from amlhp.flows.worker import FlowRuntime

    gc.collect()
    tracemalloc.start()
    scorer = FlowScorer(fm, attack=attack, explain_every=explain_every)
    runtime = FlowRuntime(fm.config, scorer, 10.0)
    runtime.load(gateway, [], 0)
    for raw in batches:
        _step(runtime, raw)
    gc.collect()
    held, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held, len(runtime.devices)


def _close(runtime: Any) -> int:
    """The end of the input: the gateway goes idle and its open flows close."""
    closed, gateways = runtime.idle(now=float("inf"))
    if closed:
        runtime.score(closed)
        runtime.writes(closed, gateways)
        runtime.device_updates()
    return len(closed)


def cpu_model() -> str:
    """The CPU and its core count, for the record of a figure."""
    import os

    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} x {name}"


def _step(runtime: Any, raw: pa.RecordBatch) -> int:
    """One raw message as the agent handles it: ingest, score, writes, inventory."""
    closed, gateways = runtime.ingest(raw, 0)
    if closed:
        runtime.score(closed)
    runtime.writes(closed, gateways)
    runtime.device_updates()
    return len(closed)


__all__ = ["bench_flows", "cpu_model"]
