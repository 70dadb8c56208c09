"""The main job, end to end on one machine: broker, topics, the stages and a tap.

``amlhp demo`` replays the committed demo capture through the whole pipeline (packet
worker and sink, alert stage and sink, flow worker and sink), waits until every packet is
accounted for (verdict or dead letter), the incidents are closed and the flows scored,
prints what happened (verdicts, incidents, flow verdicts per class, the device inventory)
and ends with one JSON object on stdout.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from amlhp.errors import AmlhpError
from amlhp.pipeline.children import StageProcess, child_env, start_stage
from amlhp.pipeline.dataset import read_verdicts
from amlhp.pipeline.devices import read_inventory
from amlhp.pipeline.incident_dataset import wait_incidents, wait_settled
from amlhp.pipeline.incidents import device_cell, incident_json
from amlhp.settings import Settings
from amlhp.streams.accounting import Accounting, account_run
from amlhp.streams.demo_metrics import start_demo_metrics
from amlhp.streams.exceptions import StreamsError
from amlhp.streams.tap import Tap, TapStats, pcap_packets, run_tap

log = logging.getLogger(__name__)


#: The demo closes a gateway's incidents after this many idle seconds (not the default 30 s)
DEMO_ALERT_IDLE_S = 8.0
#: ... and its open flows after this many (not the default 10 s), so that the flow worker
#: has named the hosts before their incidents close
DEMO_FLOW_IDLE_S = 3.0
#: ... and its alert stage judges a batch of verdicts once the flow worker has told the
#: flows up to its packets (waiting at most this long), so that its incidents are the
#: offline command's, flow evidence included (unless AMLHP_ALERT_FLOW_WAIT_S says otherwise)
DEMO_ALERT_FLOW_WAIT_S = 30.0


def latency_ms(verdict_root: Path) -> dict[str, float]:
    """Kafka ingestion -> verdict latency percentiles over the whole dataset.

    The demo's tap keeps the capture's own timestamps (the alert stage's windows run on
    them), so latency is measured from when the tap's batch entered Kafka.
    """
    table = read_verdicts(verdict_root)
    if table.num_rows == 0:
        return {}
    lat = (
        table.column("scored_at_ns").to_numpy(zero_copy_only=False)
        - table.column("ingested_at_ns").to_numpy(zero_copy_only=False)
    ) / 1e6
    return {
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "max": float(lat.max()),
    }


def wait_accounted(
    settings: Settings,
    verdict_root: Path,
    expected: dict[str, tuple[int, int]],
    stages: list[StageProcess],
    timeout_s: float,
    on_status: Callable[[Accounting], None] | None = None,
) -> Accounting:
    """Poll the outputs until every packet is accounted for (or time runs out)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for stage in stages:
            stage.check_alive()
        ledger = account_run(settings, verdict_root, expected)
        if on_status is not None:
            on_status(ledger)
        if ledger.complete or time.monotonic() > deadline:
            return ledger
        time.sleep(1.0)


def wait_groups_ready(
    settings: Settings,
    groups: list[str],
    stages: list[StageProcess],
    timeout_s: float,
    min_members: dict[str, int] | None = None,
) -> None:
    """Wait until each consumer group is stable with members (partitions assigned).

    Without this, a demo's latency figures would include the worker's start-up time. The
    groups are described in a child process (:mod:`amlhp.pipeline.group_probe`): the
    admin call can abort the process that makes it.
    """
    from amlhp.pipeline.group_probe import probe_groups

    config = settings.kafka_config()
    deadline = time.monotonic() + timeout_s
    pending = list(groups)
    while pending:
        for stage in stages:
            stage.check_alive()
        states = probe_groups(config, pending)
        pending = [
            group
            for group in pending
            if group not in states
            or states[group][0] != "STABLE"
            or states[group][1] < (min_members or {}).get(group, 1)
        ]
        if pending:
            if time.monotonic() > deadline:
                raise StreamsError(f"consumer groups not ready after {timeout_s}s: {pending}")
            time.sleep(0.5)


def reset_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    """Delete and re-create the pipeline topics so a run's counts are its own."""
    from amlhp.streams.topics import admin_client, delete_topics, ensure_pipeline_topics

    admin = admin_client(settings.kafka_config())
    names = settings.topics.all()
    delete_topics(admin, names)
    deadline = time.monotonic() + timeout_s
    while set(admin.list_topics(timeout=10).topics) & set(names):
        if time.monotonic() > deadline:
            raise StreamsError(f"topics {names} were not deleted within {timeout_s}s")
        time.sleep(0.5)
    while True:
        try:
            ensure_pipeline_topics(settings)
            return
        except AmlhpError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def run_demo(
    settings: Settings,
    capture: Path,
    out_dir: Path,
    work_dir: Path,
    *,
    gateway: str = "demo-gw-1",
    model: Path | None = None,
    attack_model: Path | None = None,
    timeout_s: float = 300.0,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline once over ``capture``; return the summary. ``attack_model``:
    the flow worker's attack flow model (default the committed one)."""
    run_id = time.strftime("%Y%m%d%H%M%S")
    reset_topics(settings)
    alerts_dir = out_dir.parent / "alerts"
    flows_dir = out_dir.parent / "flow-verdicts"
    for folder in (out_dir, alerts_dir, flows_dir):
        if folder.exists():
            shutil.rmtree(folder)
    wait = settings.alert_flow_wait_s or DEMO_ALERT_FLOW_WAIT_S
    settings = settings.model_copy(
        update={"alert_idle_close_s": DEMO_ALERT_IDLE_S, "alert_flow_wait_s": wait}
    )
    env = child_env(settings)  # every setting, -X properties and secrets included
    worker_args = ["worker", "--app-id", f"amlhp-demo-{run_id}"]
    if model is not None:
        worker_args += ["--model", str(model)]
    # the tap's metrics are served here; the worker and the sink serve their own
    metrics = start_demo_metrics(run_id, settings.home)
    worker_args += ["--metrics-port", str(metrics.ports["worker"])]
    from amlhp.progress import console

    for line in metrics.describe():
        console().print(line)
    stages = [
        start_stage("worker", worker_args, work_dir, env),
        start_stage(
            "sink",
            [
                "sink",
                "--out",
                str(out_dir),
                "--group",
                f"amlhp-demo-sink-{run_id}",
                "--roll-seconds",
                "2",
                "--metrics-port",
                str(metrics.ports["sink"]),
            ],
            work_dir,
            env,
        ),
        start_stage("alerts", ["alerts-stage", "--app-id", f"amlhp-demo-alerts-{run_id}",
                               "--metrics-port", str(metrics.ports["alerts"])], work_dir, env),
        start_stage("alert-sink", ["alerts-sink", "--out", str(alerts_dir), "--group",
                                   f"amlhp-demo-alert-sink-{run_id}", "--roll-seconds", "1"],
                    work_dir, env),
        start_stage("flows", ["flows", "worker", "--app-id", f"amlhp-demo-flows-{run_id}",
                              "--idle-close", str(DEMO_FLOW_IDLE_S),
                              *(["--attack-model", str(attack_model)] if attack_model else [])],
                    work_dir, env),
        start_stage("flow-sink", ["flows", "sink", "--out", str(flows_dir), "--group",
                                  f"amlhp-demo-flows-sink-{run_id}", "--roll-seconds", "1"],
                    work_dir, env),
    ]  # fmt: skip
    try:
        if on_status is not None:
            on_status("demo: waiting for the worker and the sink to join their groups")
        groups = ["", "-sink", "-alerts", "-alert-sink", "-flows", "-flows-sink"]
        wait_groups_ready(settings, [f"amlhp-demo{g}-{run_id}" for g in groups], stages, 180.0)
        tap = Tap(settings, gateway)
        started = time.time()
        stop = threading.Event()

        def on_tap(stats: TapStats) -> None:
            if on_status is not None:
                on_status(f"tap: {stats.packets} packets sent")

        # the capture's own clock: the alert stage's windows and rates run on it
        packets = pcap_packets([capture], stop=stop, keep_timestamps=True)
        tap_stats = run_tap(tap, packets, stop=stop, on_progress=on_tap)
        if tap_stats.failed_packets:
            raise StreamsError(f"tap failed to deliver {tap_stats.failed_packets} packets")
        expected = {gateway: (0, tap_stats.packets)}

        def on_ledger(ledger: Accounting) -> None:
            if on_status is not None:
                on_status(
                    f"waiting: {ledger.verdicts} verdicts + {ledger.dead_packets} dead letters "
                    f"of {ledger.packets_in} packets"
                )

        ledger = wait_accounted(settings, out_dir, expected, stages, timeout_s, on_ledger)
        elapsed = time.time() - started
        if on_status is not None:
            on_status("demo: waiting for the alert stage to close the incidents")
        incidents = wait_incidents(
            alerts_dir, stages, settle_s=DEMO_ALERT_IDLE_S + 4, timeout_s=DEMO_ALERT_IDLE_S + 60
        )
        if on_status is not None:
            on_status("demo: waiting for the flow worker to score the last flows")
        flows = wait_settled(flows_dir, stages, settle_s=DEMO_FLOW_IDLE_S + 3, timeout_s=60.0)
        inventory = read_inventory(settings)
    finally:
        for stage in stages:
            stage.stop()
        metrics.close()
    summary = ledger.as_dict()
    summary["metrics_endpoints"] = metrics.endpoints
    table = read_verdicts(out_dir)
    last_verdict = (
        int(np.max(table.column("scored_at_ns").to_numpy(zero_copy_only=False)))
        if table.num_rows
        else 0
    )
    span = (last_verdict / 1e9 - started) if last_verdict else elapsed
    summary.update(
        {
            "capture": str(capture),
            "throughput_pps": round(ledger.packets_in / span, 1) if span > 0 else None,
            "latency_ms": latency_ms(out_dir),
            "verdict_dataset": str(out_dir),
            "complete": ledger.complete,
            "verdicts_by_decision": decision_counts(table),
            "alert_dataset": str(alerts_dir),
            "alerts": [incident_json(row) for row in incidents],
            "flow_dataset": str(flows_dir),
            "flow_verdicts": flows.num_rows,
            "flow_verdicts_by_class": flow_counts(flows),
            "devices": [device_json(row) for row in inventory.to_pylist()],
        }
    )
    return summary


def flow_counts(table: Any) -> dict[str, dict[str, int]]:
    """Flow verdicts per class: how many, and how many the model was sure of."""
    out: dict[str, dict[str, int]] = {}
    if table.num_rows == 0:
        return out
    for label, uncertain in zip(
        table.column("label").to_pylist(), table.column("uncertain").to_pylist(), strict=True
    ):
        entry = out.setdefault(str(label), {"flows": 0, "accepted": 0})
        entry["flows"] += 1
        entry["accepted"] += 0 if uncertain else 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["flows"]))


def device_json(row: dict[str, Any]) -> dict[str, Any]:
    """An inventory entry as the summary shows it."""
    keys = ("gateway", "host", "device_type", "confidence", "flows", "accepted_flows")
    return {k: row[k] for k in keys}


def decision_counts(table: Any) -> dict[str, int]:
    """Verdicts per decision (malicious, uncertain, benign), what an operator acts on."""
    if table.num_rows == 0 or "decision" not in table.column_names:
        return {}
    counts = pc.value_counts(table.column("decision")).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts}


def print_summary(summary: dict[str, Any]) -> None:
    """A human-readable account of the run, on stderr (stdout keeps the JSON line)."""
    from rich.table import Table

    from amlhp.progress import console

    out = console()
    table = Table(title="amlhp demo", show_header=False)
    table.add_row("capture", str(summary.get("capture")))
    table.add_row("packets in", str(summary["packets_in"]))
    table.add_row("verdicts", str(summary["verdicts"]))
    table.add_row("dead letters", str(summary["dead_letters"]))
    table.add_row("duplicates", str(summary["duplicates"]))
    table.add_row("missing", str(summary["missing"]))
    table.add_row("throughput", f"{summary.get('throughput_pps')} packets/s")
    lat = summary.get("latency_ms") or {}
    if lat:
        table.add_row(
            "latency (Kafka -> verdict)",
            f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms",
        )
    decisions = summary.get("verdicts_by_decision") or {}
    table.add_row(
        "decisions",
        ", ".join(f"{d} {decisions.get(d, 0)}" for d in ("malicious", "uncertain", "benign")),
    )
    table.add_row("verdict dataset", str(summary.get("verdict_dataset")))
    for name, url in (summary.get("metrics_endpoints") or {}).items():
        table.add_row(f"metrics of {name}", str(url))
    out.print(table)
    classes = Table("class", "verdicts", title="verdicts per class")
    for name, n in sorted(summary["verdicts_by_class"].items(), key=lambda kv: -kv[1]):
        classes.add_row(name, str(n))
    out.print(classes)
    alerts = Table("host", "device", "role", "kind", "packets", "first seen", "last seen",
                   title=f"incidents ({len(summary.get('alerts') or [])})")  # fmt: skip
    for item in summary.get("alerts") or []:
        alerts.add_row(item["host"], device_cell(item), item["role"], item["kind"],
                       str(item["packets"]), item["first_seen"], item["last_seen"])  # fmt: skip
    out.print(alerts)
    flows = Table("class", "flows", "accepted", title=f"flow verdicts per class "
                  f"({summary.get('flow_verdicts', 0)} flows)")  # fmt: skip
    for name, n in (summary.get("flow_verdicts_by_class") or {}).items():
        flows.add_row(name, str(n["flows"]), str(n["accepted"]))
    out.print(flows)
    hosts = len(summary.get("devices") or [])
    devices = Table("gateway", "host", "device type", "confidence", "flows", "accepted",
                    title=f"device inventory ({hosts} hosts)")  # fmt: skip
    for d in summary.get("devices") or []:
        devices.add_row(d["gateway"], d["host"], d["device_type"], f"{d['confidence']:.2f}",
                        str(d["flows"]), str(d["accepted_flows"]))  # fmt: skip
    out.print(devices)
    reasons = Table("reason", "dead letters", title="dead letters per reason")
    for name, n in sorted(summary["dead_letters_by_reason"].items(), key=lambda kv: -kv[1]):
        reasons.add_row(name, str(n))
    out.print(reasons)
