"""PNG plots of the end-to-end and scale-out results, drawn from the result JSON alone.

Plots are made from the JSON (not from live objects) so that a committed result can be
re-plotted without re-running it. The Fig. 10 plot lives with its benchmark
(:func:`amlhp.benchmarks.score_bench.plot_fig10`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amlhp.plots import pyplot, save_figure


def _title(doc: dict[str, Any], what: str) -> str:
    machine = doc.get("machine", {})
    return f"{what}\n{machine.get('cpu', '?')}, {machine.get('cores_usable', '?')} cores"


def plot_timeline(doc: dict[str, Any], path: Path) -> Path:
    """Offered and verdict rate per second, lag in records and in seconds, over the run."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(8.0, 7.0), sharex=True)
    rate_ax, records_ax, seconds_ax = axes
    loads = ([doc["capacity"]] if doc.get("capacity") else []) + list(doc["loads"])
    for i, load in enumerate(loads):
        series = load["series"]
        start = series["start"]
        xs = [start + s + 0.5 for s in range(len(series["verdicts_per_s"]))]
        for key, color, width, label in (
            ("offered_per_s", "tab:gray", 1.0, "offered (tap)"),
            ("verdicts_per_s", "tab:blue", 1.2, "verdicts"),
        ):
            rate_ax.plot(xs, series[key], color=color, lw=width, label=label if i == 0 else None)
        end = start + load["load_seconds"]
        for ax in axes:
            ax.axvspan(start, end, color="tab:orange", alpha=0.08)
        label = "max" if load is doc.get("capacity") else f"{load['fraction_of_capacity']:.0%}"
        rate_ax.annotate(label, (start, 0), fontsize=7, xytext=(2, 2), textcoords="offset points")
    rate_ax.set_ylabel("packets / s")
    rate_ax.legend(fontsize=7, loc="upper left")
    lag = doc.get("lag_series", [])
    ts = [s["t"] for s in lag]
    for key, color, label in (
        ("lag_records_worker", "tab:red", "worker group (raw + encoded)"),
        ("lag_records_sink", "tab:green", "sink group (verdicts)"),
    ):
        records_ax.plot(ts, [s.get(key, 0) for s in lag], color=color, lw=1, label=label)
    records_ax.set_ylabel("lag (records)")
    records_ax.legend(fontsize=7, loc="upper left")
    for key, color, label in (
        ("lag_seconds_worker", "tab:red", "worker group"),
        ("lag_seconds_sink", "tab:green", "sink group"),
    ):
        seconds_ax.plot(ts, [s.get(key, 0.0) for s in lag], color=color, lw=1, label=label)
    seconds_ax.set_ylabel("lag (seconds)")
    seconds_ax.set_xlabel("seconds since the pipeline was ready (shaded: load offered)")
    seconds_ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(_title(doc, "Throughput and consumer lag over time"), fontsize=9)
    return save_figure(fig, path)


def plot_latency(doc: dict[str, Any], path: Path) -> Path:
    """Capture-to-verdict latency distribution (CDF) of each offered load."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for load in doc["loads"]:
        qs = load.get("latency_quantiles_ms") or []
        if not qs:
            continue
        ax.plot(
            [max(v, 0.01) for _, v in qs],
            [q / 100 for q, _ in qs],
            lw=1.2,
            label=f"{load['fraction_of_capacity']:.0%} ({load['offered_pps']:,.0f} packets/s)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("capture-to-verdict latency (ms)")
    ax.set_ylabel("fraction of packets")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(_title(doc, "Latency distribution by offered load"), fontsize=9)
    return save_figure(fig, path)


def plot_e2e(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Both end-to-end plots into ``out_dir`` (``e2e-timeline.png``, ``e2e-latency.png``)."""
    return [
        plot_timeline(doc, out_dir / "e2e-timeline.png"),
        plot_latency(doc, out_dir / "e2e-latency.png"),
    ]


def plot_scaleout(doc: dict[str, Any], path: Path) -> Path:
    """Capacity with 1 and 2 workers in one consumer group."""
    plt = pyplot()
    rows = doc["rows"]
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    labels = [f"{r['workers']} worker{'s' if r['workers'] > 1 else ''}" for r in rows]
    ax.bar(labels, [r["capacity_pps"] or 0 for r in rows], color="tab:blue")
    for i, r in enumerate(rows):
        ax.annotate(
            f"{r['capacity_pps'] or 0:,.0f}",
            (i, r["capacity_pps"] or 0),
            ha="center",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_ylabel("packets / s (full-speed tap)")
    ax.set_title(_title(doc, f"Scale-out on {doc['partitions']} partitions"), fontsize=9)
    return save_figure(fig, path)
