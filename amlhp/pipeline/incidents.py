"""Incidents as an operator reads them: one JSON object per incident, or a table.

Shared by ``amlhp alerts`` (offline), ``amlhp demo`` (the stream's incidents) and
``amlhp report``, so they read and print the same fields the same way; it lives with the
parts the stages share because those three are different stages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(ns: int) -> str:
    """ns since the epoch -> ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The incidents: the latest revision of each ``incident_id``, by first packet."""
    last: dict[str, dict[str, Any]] = {}
    for row in rows:
        prev = last.get(row["incident_id"])
        if prev is None or row["revision"] >= prev["revision"]:
            last[row["incident_id"]] = row
    return sorted(last.values(), key=lambda r: (r["first_seen_ns"], r["gateway"], r["host"]))


def topic_incidents(settings: Any, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Every incident on the alert topic (read to its current end): its latest revision."""
    from amlhp.pipeline.kafka_io import read_topic_batches
    from amlhp.wire import ALERT, from_ipc

    batches, _ = read_topic_batches(
        settings, settings.topic_alerts, lambda v: from_ipc(v, ALERT), timeout_s
    )
    return latest([r for b in batches for r in b.to_pylist()])


def find_incident(settings: Any, incident: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """The latest revision of an incident on the alert topic;
    :class:`~amlhp.pipeline.exceptions.PipelineError` when it is not there."""
    from amlhp.pipeline.exceptions import PipelineError

    found = [r for r in topic_incidents(settings, timeout_s) if r["incident_id"] == incident]
    if not found:
        raise PipelineError(f"incident {incident!r} is not on {settings.topic_alerts}")
    return found[0]


def incident_json(row: dict[str, Any]) -> dict[str, Any]:
    """The latest alert row of an incident -> the object ``amlhp alerts --json`` prints."""
    return {
        "incident_id": row["incident_id"],
        "gateway": row["gateway"],
        "host": row["host"],
        "role": row["role"],
        "kind": row["kind"],
        "severity": row["severity"],
        "confidence": round(float(row["confidence"]), 4),
        "techniques": row["techniques"],
        "evidence": [
            f"{e['detector']}@{e['scale']} ({e['kind']}, {e['strength']:.2f}): {e['facts']}"
            for e in row["evidence"] or []
        ],
        "status": row["status"],
        "first_seen": iso(row["first_seen_ns"]),
        "last_seen": iso(row["last_seen_ns"]),
        "opened": iso(row["opened_ns"]),
        "packets": row["packets"],
        "score": round(float(row["mean_score"]), 4),
        "classes": dict(zip(row["classes"], row["class_packets"], strict=True)),
        "top_peers": dict(zip(row["top_peers"], row["top_peer_packets"], strict=True)),
        "top_ports": dict(
            zip([str(p) for p in row["top_ports"]], row["top_port_packets"], strict=True)
        ),
        "sample_seqs": row["sample_seqs"],
        "explanation_seq": row["explanation_seq"],
        "model_version": row["model_version"],
        "device_type": row.get("device_type"),
        "device_confidence": row.get("device_confidence"),
        "community_ids": list(row.get("community_ids") or []),
        "suppressed_by": row.get("suppressed_by"),
        "feedback": row.get("feedback"),
    }


INCIDENT_COLUMNS = ("gateway", "host", "device", "role", "kind", "severity", "packets",
                    "first seen", "last seen", "score", "classes")  # fmt: skip


def device_cell(row: dict[str, Any]) -> str:
    """The host's device type and the inventory's confidence, ``?`` where not known."""
    if row.get("device_type") is None:
        return "?"
    return f"{row['device_type']} ({float(row['device_confidence'] or 0):.2f})"


def incident_cells(row: dict[str, Any]) -> list[str]:
    """One incident as the table's text cells (hosts and times in full)."""
    return [
        row["gateway"], row["host"], device_cell(row), row["role"], row["kind"],
        str(row.get("severity", "")) + (" (suppressed)" if row.get("suppressed_by") else ""),
        str(row["packets"]), iso(row["first_seen_ns"]), iso(row["last_seen_ns"]),
        f"{row['mean_score']:.3f}", ",".join(row["classes"][:3]),
    ]  # fmt: skip


def print_incidents(incidents: list[dict[str, Any]], title: str = "incidents") -> None:
    """The incidents on stdout: a table on a terminal, tab-separated lines with a header
    when piped (like ``tshark -T fields``: nothing truncated, one incident per line)."""
    import sys

    if not sys.stdout.isatty():
        print("\t".join(c.replace(" ", "_") for c in INCIDENT_COLUMNS))
        for row in incidents:
            print("\t".join(incident_cells(row)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in INCIDENT_COLUMNS:
        # hosts and times are never cut; the classes wrap
        table.add_column(name, no_wrap=name != "classes", overflow="fold")
    for row in incidents:
        table.add_row(*incident_cells(row))
    Console(width=max(160, Console().width)).print(table)
