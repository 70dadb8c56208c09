"""How the incidents do on a recorded lab run: ``make lab-data``'s slow attacks.

``amlhp alerts-lab var/lab/slow`` merges the run's captures in time order (one gateway, as
a sensor would see them side by side), runs :func:`~amlhp.alerts.offline.alerts_from_captures`
(the stream's code) over them with the configured thresholds, and reports per scenario of
the manifest whether an incident of its class's kind names the scenario's address (as host
or peer), which host it names, and the event time from the scenario's first packet to the
incident; and the incidents of benign hosts (``127.10.0.0/16``) per device-hour of the
benign capture. The thresholds were fitted on the lab demo and the public captures
(``amlhp alerts-evaluate``), never on this run: every figure is on a source they did not
tune.
"""

from __future__ import annotations

import ipaddress
import json
import tempfile
from pathlib import Path
from typing import Any

from amlhp.alerts.evaluate import BENIGN_NET, device_hours
from amlhp.alerts.exceptions import AlertsError
from amlhp.alerts.kinds import kind_of
from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.encoders.capture import iter_encoded
from amlhp.model.scorer import Scorer


def first_packet_ns(pcap: Path) -> int | None:
    """Capture time of the first packet of ``pcap`` (None for an empty file)."""
    for batch in iter_encoded([pcap], gateway=pcap.name):
        if batch.num_rows:
            return int(batch.column("ts_ns")[0].as_py())
    return None


def _names(incident: dict[str, Any], address: str) -> bool:
    return incident["host"] == address or address in incident["top_peers"]


def lab_run_figures(run_dir: Path, scorer: Scorer, policy: AlertPolicy) -> dict[str, Any]:
    """The figures of one lab run folder (its ``manifest.json`` and captures)."""
    from amlhp.lab.capture import merge_files

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise AlertsError(f"{run_dir} is not a lab run folder: {exc}") from exc
    entries = manifest["files"]
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "merged.pcap"
        merge_files([run_dir / e["file"] for e in entries], merged)
        incidents = alerts_from_captures([merged], scorer, policy, gateway="lab").incidents
    rows = []
    for entry in entries:
        if not entry.get("marker"):
            continue
        kind, address = kind_of(entry["label"]), entry["marker"]
        hits = sorted(
            (i for i in incidents if i["kind"] == kind and _names(i, address)),
            key=lambda i: i["opened_ns"],
        )
        start = first_packet_ns(run_dir / entry["file"])
        first = hits[0] if hits else None
        rows.append({
            "scenario": entry["scenario"], "label": entry["label"], "kind": kind,
            "address": address, "packets": entry["packets"],
            "minutes": round(entry["elapsed_s"] / 60.0, 1), "incidents": len(hits),
            "host": first["host"] if first else None,
            "detectors": sorted({e["detector"] for e in first["evidence"]}) if first else [],
            "time_to_alert_s": (
                round((first["opened_ns"] - start) / 1e9, 1) if first and start else None
            ),
        })  # fmt: skip
    benign_files = [run_dir / e["file"] for e in entries if not e.get("marker")]
    hours = device_hours(benign_files) if benign_files else 0.0
    benign = [i for i in incidents if ipaddress.ip_address(i["host"]) in BENIGN_NET]
    return {
        "run": str(run_dir),
        "command": manifest.get("command", ""),
        "created": manifest.get("created"),
        "scenarios": rows,
        "detected": sum(1 for r in rows if r["incidents"]),
        "benign_device_hours": round(hours, 2),
        "benign_incidents": [
            {k: i[k] for k in ("host", "kind", "packets", "top_peers")} for i in benign
        ],
        "false_per_device_hour": round(len(benign) / hours, 4) if hours else None,
        "incidents": len(incidents),
    }


def lab_run_table(doc: dict[str, Any]) -> str:
    """The figures as a Markdown table (for docs/alerts.md and the README)."""
    lines = [
        "| scenario | minutes | packets | kind | incident names | detectors | to alert (s) |",
        "|---|---:|---:|---|---|---|---:|",
    ]
    for r in doc["scenarios"]:
        lines.append(
            f"| {r['scenario']} | {r['minutes']} | {r['packets']:,} | {r['kind']} | "
            f"{r['host'] or 'none'} | {', '.join(r['detectors']) or '-'} | "
            f"{r['time_to_alert_s'] if r['time_to_alert_s'] is not None else '-'} |"
        )
    lines.append(
        f"\n{doc['detected']} of {len(doc['scenarios'])} scenarios raised an incident of their "
        f"kind; benign hosts: {len(doc['benign_incidents'])} incidents in "
        f"{doc['benign_device_hours']} device-hours."
    )
    return "\n".join(lines)
