"""The checks of a scenario's other datasets, once the packet ledger is exact: the alert
dataset (each incident revision once, none missing) and the flow dataset (each flow
once, exactly the flows of the raw topic).

The flow check is an exact ledger too: the flows the stream stored are compared with the
flows the same assembler makes offline from the run's raw topic, read back from the
broker (:func:`amlhp.flows.assembler.iter_closed`), flow id by flow id with their packet
counts. A flow the worker lost, stored twice, cut in two by a restart or counted a packet
twice in differs from its offline twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amlhp.pipeline.incident_dataset import alert_rows, wait_incidents, wait_settled
from amlhp.settings import Settings


def check_alerts(root: Path, stages: Sequence[Any], idle_s: float) -> str | None:
    """Once the incidents settled: each (incident, revision) stored once, revisions
    without a gap, one ``opened`` row per incident; returns what is wrong, if anything."""
    wait_incidents(root, stages, settle_s=idle_s + 4, timeout_s=idle_s + 120)
    rows = alert_rows(root)
    if not rows:
        return "no alert row was stored"
    keys = [(r["incident_id"], r["revision"]) for r in rows]
    if len(keys) != len(set(keys)):
        return f"{len(keys) - len(set(keys))} alert rows stored twice"
    revisions: dict[str, list[int]] = {}
    for incident, revision in keys:
        revisions.setdefault(incident, []).append(revision)
    gaps = [i for i, r in revisions.items() if sorted(r) != list(range(min(r), min(r) + len(r)))]
    opened = [r["incident_id"] for r in rows if r["status"] == "opened"]
    if gaps:
        return f"alert rows missing in {len(gaps)} incidents: {gaps[:3]}"
    if sorted(opened) != sorted(revisions):
        return "not exactly one 'opened' row per incident"
    return None


def offline_flows(settings: Settings) -> dict[str, int]:
    """flow id -> packets of every flow in the run's raw topic, as the committed flow
    model's assembler closes them offline."""
    from amlhp.flows.artifact import DEFAULT_MODEL, load_flow_model
    from amlhp.flows.assembler import FlowAssembler, iter_closed
    from amlhp.pipeline.kafka_io import read_topic_batches
    from amlhp.wire import RAW, from_ipc

    batches, _ = read_topic_batches(settings, settings.topic_raw, lambda v: from_ipc(v, RAW))
    batches.sort(key=lambda b: int(b.column("seq")[0].as_py()) if b.num_rows else -1)
    assembler = FlowAssembler(load_flow_model(DEFAULT_MODEL).config)
    return {f.flow_id: f.packets for f in iter_closed(assembler, batches)}


def flow_topic_duplicates(settings: Settings) -> int:
    """Flow verdicts on the topic whose (gateway, flow_seq) came before: what a killed
    flow worker published again (the sink drops them)."""
    from amlhp.pipeline.kafka_io import read_topic_batches
    from amlhp.wire import FLOW_VERDICT, from_ipc

    batches, _ = read_topic_batches(
        settings, settings.topic_flow_verdicts, lambda v: from_ipc(v, FLOW_VERDICT)
    )
    keys = [
        key
        for b in batches
        for key in zip(b["gateway"].to_pylist(), b["flow_seq"].to_pylist(), strict=True)
    ]
    return len(keys) - len(set(keys))


def check_flows(
    root: Path, stages: Sequence[Any], settings: Settings, idle_s: float
) -> tuple[int, str | None]:
    """(flows stored, what is wrong if anything): the flow dataset against
    :func:`offline_flows`, once it holds as many flows and stopped changing."""
    expected = offline_flows(settings)
    table = wait_settled(
        root,
        stages,
        settle_s=idle_s + 3,
        timeout_s=idle_s + 120,
        ready=lambda t: t.num_rows >= len(expected),
    )
    rows = table.select(["flow_id", "packets"]).to_pylist() if table.num_rows else []
    stored = {r["flow_id"]: r["packets"] for r in rows}
    problems = []
    if len(rows) != len(stored):
        problems.append(f"{len(rows) - len(stored)} flow rows stored twice")
    if missing := expected.keys() - stored.keys():
        problems.append(f"{len(missing)} of {len(expected)} flows missing: {sorted(missing)[:2]}")
    if extra := stored.keys() - expected.keys():
        problems.append(f"{len(extra)} flows not in the raw topic's: {sorted(extra)[:2]}")
    if wrong := [k for k in expected.keys() & stored.keys() if expected[k] != stored[k]]:
        problems.append(f"{len(wrong)} flows with other packet counts: {wrong[:2]}")
    return len(rows), "; ".join(problems) or None
