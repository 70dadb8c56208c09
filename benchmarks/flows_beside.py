"""The packet pipeline's capacity with the flow worker beside it, and the flow worker's pace.

The flow worker reads the same raw topic as the packet worker, on the same two cores, so
what it costs the packet pipeline is measured the way ``amlhp bench secure`` measures
TLS: the same full-speed capacity run of ``amlhp bench e2e`` (a tap at full speed over
the capture, drained and exactly accounted), without and with the flow worker,
alternating, ``rounds`` times each, so that a slow minute of a shared machine does not
land on one side only.

With the flow worker on, the run also waits until the flow worker has committed the
whole raw topic (its group's lag, sampled once a second, reaches 0): its pace is the
packets over the time from the tap's start to then, so it includes the flow worker's
share of the cores while the packet pipeline ran (1 s granularity). ``amlhp bench flows``
gives its capacity alone, without Kafka.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from amlhp.benchmarks.e2e import E2EConfig, alternate, capacity, median_pps
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import StatusFn, quiet
from amlhp.settings import Settings

#: the issue's goal for the flow worker beside the packet worker (packets/s)
GOAL_FLOW_PPS = 20_000.0


def run_flows_beside(
    settings: Settings,
    cfg: E2EConfig,
    *,
    rounds: int = 2,
    work_dir: Path = Path("out/bench"),
    on_status: StatusFn = quiet,
) -> dict[str, Any]:
    """Alternate capacity runs without and with the flow worker; the medians."""

    def on(flows: bool) -> Callable[[str], dict[str, Any]]:
        return lambda name: capacity(settings, cfg, work_dir, name, on_status, flow_worker=flows)

    modes = {"packets_only": on(False), "with_flows": on(True)}
    runs = alternate(modes, rounds, on_status, extra=("flow_worker_pps",))
    medians = median_pps(runs)
    flow_pps = statistics.median(r["flow_worker_pps"] or 0.0 for r in runs["with_flows"])
    ratio = medians["with_flows"] / medians["packets_only"] if medians["packets_only"] else None
    return {
        "kind": "flows_beside",
        "what": "end-to-end capacity (tap, broker, worker, sink on this machine) without and "
        "with the flow worker on the same raw topic, full speed over the capture, "
        "alternating rounds; the flow worker's pace from the tap's start to its lag at 0",
        "capture": str(cfg.capture),
        "capacity_loops": cfg.capacity_loops,
        "rounds": rounds,
        "machine": machine_facts(),
        "runs": runs,
        "median_pps": {m: round(v, 1) for m, v in medians.items()},
        "ratio": round(ratio, 3) if ratio is not None else None,
        "flow_worker_pps": round(flow_pps, 1),
        "goal_flow_pps": GOAL_FLOW_PPS,
        "goal_met": flow_pps >= GOAL_FLOW_PPS,
        "exact": all(r["exact"] for rs in runs.values() for r in rs),
    }


def flows_beside_table(doc: dict[str, Any]) -> str:
    """The result as a Markdown table (docs/benchmarks.md)."""
    lines = [
        "| pipeline | capacity (packets/s, median) | flow worker (packets/s) | exact accounting |",
        "| --- | ---: | ---: | --- |",
    ]
    for mode, label in (("packets_only", "packet worker"), ("with_flows", "+ flow worker")):
        runs = doc["runs"][mode]
        exact = "yes" if all(r["exact"] for r in runs) else "NO"
        each = ", ".join(f"{r['achieved_pps']:,.0f}" for r in runs)
        flow = ", ".join(f"{r['flow_worker_pps']:,.0f}" for r in runs if r["flow_worker_pps"])
        lines.append(
            f"| {label} | {doc['median_pps'][mode]:,.0f} ({each}) | {flow or '-'} | {exact} |"
        )
    met = "met" if doc["goal_met"] else "NOT met"
    lines.append("")
    lines.append(
        f"with / without the flow worker = {doc['ratio']}; flow worker "
        f"{doc['flow_worker_pps']:,.0f} packets/s (goal {doc['goal_flow_pps']:,.0f}: {met})"
    )
    return "\n".join(lines)


def register(bench: typer.Typer) -> None:
    """``amlhp bench flows-beside`` (the bench CLI module is at its size limit)."""
    from amlhp.context import settings_of

    @bench.command("flows-beside")
    def flows_beside_cmd(
        ctx: typer.Context,
        rounds: int = typer.Option(2, "--rounds", min=1, help="Capacity runs per mode"),
        capacity_loops: int = typer.Option(
            3, "--capacity-loops", min=1, help="Passes over the capture in each run"
        ),
        out: Path = typer.Option(
            Path("benchmarks/results/flows-beside.json"), "--out", "-o", help="Result JSON"
        ),
        work_dir: Path = typer.Option(Path("out/bench"), "--work-dir", help="Logs, datasets"),
    ) -> None:
        """The packet pipeline's capacity without and with the flow worker beside it, and
        the flow worker's pace there, alternating runs on the local broker."""
        from amlhp.benchmarks.results import write_json

        cfg = E2EConfig(capacity_loops=capacity_loops)
        doc = run_flows_beside(
            settings_of(ctx), cfg, rounds=rounds, work_dir=work_dir,
            on_status=lambda text: typer.echo(text, err=True),
        )  # fmt: skip
        write_json(doc, out)
        typer.echo(flows_beside_table(doc))
