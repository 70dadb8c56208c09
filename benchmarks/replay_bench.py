"""``amlhp bench replay``: how fast ``amlhp replay`` re-scores a window, beside the live rate.

The benchmark creates topics of its own, publishes the lab demo capture once per gateway
through real taps (capture timestamps kept), then runs the real ``amlhp replay`` command
over the whole window, with one process and with ``--processes 2`` (one torch thread
each), into fresh folders. Packets/s is the window's packets over the command's wall
time, model load and planning included. The live figure beside it is the end-to-end
sustained rate of ``benchmarks/results/e2e.json`` when that file is there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import StatusFn, bench_settings, new_run_id, quiet
from amlhp.data import DEMO_CAPTURE
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings

WINDOW = ["--from", "2000-01-01T00:00Z", "--to", "2100-01-01T00:00Z"]


def amlhp_json(env: dict[str, str], *args: str, timeout_s: float = 1800) -> dict[str, Any]:
    """Run an ``amlhp`` command in a child process; its last JSON line (the summary of
    ``--json`` commands). A failure raises with the end of its standard error."""
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        from amlhp.benchmarks.exceptions import BenchmarksError

        raise BenchmarksError(f"amlhp {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    lines = [x for x in done.stdout.splitlines() if x.startswith("{")]
    doc: dict[str, Any] = json.loads(lines[-1])
    return doc


def _live_rate(results_dir: Path) -> float | None:
    path = results_dir / "e2e.json"
    if not path.exists():
        return None
    rate = json.loads(path.read_text()).get("sustained_packets_per_second")
    return None if rate is None else float(rate)


def run_replay_bench(
    settings: Settings,
    *,
    work_dir: Path,
    results_dir: Path,
    gateways: int = 4,
    partitions: int = 4,
    on_status: StatusFn = quiet,
) -> dict[str, Any]:
    """Publish ``gateways`` copies of the demo capture, replay them; returns the result."""
    from confluent_kafka.admin import AdminClient

    from amlhp.streams.topics import delete_topics, ensure_pipeline_topics

    run_id = new_run_id()
    bench = bench_settings(settings, run_id, partitions)
    ensure_pipeline_topics(bench)
    env = child_env(bench, {**os.environ, "OMP_NUM_THREADS": "2"})
    runs = []
    try:
        packets = 0
        for i in range(gateways):
            on_status(f"replay bench: tap {i + 1}/{gateways}")
            tap = amlhp_json(env, "tap", str(DEMO_CAPTURE), "--gateway", f"bench-{i}",
                         "--keep-timestamps")  # fmt: skip
            packets += int(tap["packets"])
        for processes, threads in ((1, 2), (2, 1)):
            on_status(f"replay bench: {processes} process(es)")
            out = work_dir / f"replay-{run_id}-{processes}"
            started = time.perf_counter()
            summary = amlhp_json(
                {**env, "OMP_NUM_THREADS": str(threads)},
                "replay", *WINDOW, "--out", str(out), "--processes", str(processes), "--json",
            )  # fmt: skip
            wall = time.perf_counter() - started
            totals = summary["totals"]
            exact = totals["verdicts"] + totals["dead_letters"] == packets == totals["packets"]
            runs.append({
                "processes": processes, "scoring_threads": threads, "wall_s": round(wall, 2),
                "packets": totals["packets"], "verdicts": totals["verdicts"],
                "dead_letters": totals["dead_letters"],
                "packets_per_second": round(totals["packets"] / wall, 1), "exact": exact,
            })  # fmt: skip
    finally:
        delete_topics(AdminClient(bench.kafka_config()), bench.topics.all())
    live = _live_rate(results_dir)
    best = max(r["packets_per_second"] for r in runs)
    return {
        "kind": "replay",
        "what": "amlhp replay of the whole window (re-scored with the default model)",
        "capture": DEMO_CAPTURE.name,
        "gateways": gateways,
        "partitions": partitions,
        "packets": packets,
        "machine": machine_facts(),
        "runs": runs,
        "live_sustained_packets_per_second": live,
        "goals": {
            "twice_live": {
                "goal": None if live is None else 2 * live,
                "measured": best,
                "met": None if live is None else best >= 2 * live,
            }
        },
    }


def replay_table(doc: dict[str, Any]) -> str:
    """The markdown table of a ``kind == "replay"`` document."""
    from amlhp.benchmarks.report import _n, machine_line
    from amlhp.markdown import markdown_table

    header = ["processes", "scoring threads each", "packets", "wall (s)", "packets/s", "exact"]
    rows = markdown_table(
        header,
        (
            [r["processes"], r["scoring_threads"], _n(r["packets"]), f"{r['wall_s']:.1f}",
             _n(r["packets_per_second"]), "yes" if r["exact"] else "NO"]
            for r in doc["runs"]
        ),
    )  # fmt: skip
    goal = doc["goals"]["twice_live"]
    live = doc.get("live_sustained_packets_per_second")
    rows.append("")
    rows.append(
        f"Live end-to-end sustained: {_n(live)} packets/s; goal at least twice that "
        f"({_n(goal['goal'])}): {'met' if goal['met'] else 'not met'} "
        f"(best replay {_n(goal['measured'])} packets/s)."
    )
    rows.append("")
    rows.append(machine_line(doc))
    return "\n".join(rows)
