"""How the incidents do on a recorded lab run: ``make lab-data``'s slow attacks.

``amlhp alerts-lab var/lab/slow`` runs :func:`~amlhp.alerts.offline.alerts_from_captures`
(the stream's code) with the configured thresholds over each of the run's captures as a
gateway of its own, and reports per scenario of the manifest whether an incident of its
class's kind names the scenario's address (as host or peer), which host it names, how
long the scenario ran and the event time from its first packet to the incident; the
incidents of benign hosts (``127.10.0.0/16``) per device-hour of the benign capture; and
the incidents of all captures merged in time order as one gateway. The thresholds were
fitted on the lab demo and the public captures
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


def _active_minutes(pcap: Path) -> float:
    """Minutes from a capture's first packet to its last (how long the attack ran)."""
    first = last = None
    for batch in iter_encoded([pcap], gateway=pcap.name):
        ts = batch.column("ts_ns")
        if batch.num_rows:
            first = first if first is not None else int(ts[0].as_py())
            last = int(ts[-1].as_py())
    return 0.0 if first is None or last is None else round((last - first) / 60e9, 1)


def lab_run_figures(
    run_dir: Path, scorer: Scorer, policy: AlertPolicy, attack_model: str | None = None
) -> dict[str, Any]:
    """The figures of one lab run folder (its ``manifest.json`` and captures).

    Each scenario is judged **on its own capture**, as its own gateway: the guessing tools
    share the kernel's source address (127.0.0.1) and the DNS exfiltration and the beacon
    the same compromised device, so on the merged captures one scenario's incident would
    name another's address. The merged view (one gateway, as a sensor sees them side by
    side) is reported too, as ``merged_incidents``. With ``attack_model`` (a path), that
    flow model's verdicts are evidence too: give one that never saw this run (``amlhp
    flows loso --save-models``: the fold that held the lab's run out)."""
    from amlhp.lab.capture import merge_files

    def flows(paths: list[Path], gateway: str | None) -> Any:
        if attack_model is None:
            return None
        from amlhp.flows.artifact import DEFAULT_MODEL
        from amlhp.flows.inventory_cli import flows_of_captures

        return flows_of_captures(paths, DEFAULT_MODEL, gateway, gateway is None, attack_model)[0]

    try:
        manifest = json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise AlertsError(f"{run_dir} is not a lab run folder: {exc}") from exc
    entries = manifest["files"]
    files = [run_dir / e["file"] for e in entries]
    own = alerts_from_captures(
        files, scorer, policy, per_file=True, flows=flows(files, None)
    ).incidents
    with tempfile.TemporaryDirectory() as tmp:
        merged = Path(tmp) / "merged.pcap"
        merge_files(files, merged)
        together = alerts_from_captures(
            [merged], scorer, policy, gateway="lab", flows=flows([merged], "lab")
        ).incidents
    rows = []
    for entry in entries:
        if not entry.get("marker"):
            continue
        kind, address = kind_of(entry["label"]), entry["marker"]
        hits = sorted(
            (i for i in own if i["gateway"] == entry["file"] and i["kind"] == kind
             and _names(i, address)),
            key=lambda i: i["opened_ns"],
        )  # fmt: skip
        start = first_packet_ns(run_dir / entry["file"])
        first = hits[0] if hits else None
        rows.append({
            "scenario": entry["scenario"], "label": entry["label"], "kind": kind,
            "address": address, "packets": entry["packets"],
            "minutes": _active_minutes(run_dir / entry["file"]), "incidents": len(hits),
            "host": first["host"] if first else None,
            "detectors": sorted({e["detector"] for e in first["evidence"]}) if first else [],
            "time_to_alert_s": (
                round((first["opened_ns"] - start) / 1e9, 1) if first and start else None
            ),
        })  # fmt: skip
    benign_files = [run_dir / e["file"] for e in entries if not e.get("marker")]
    hours = device_hours(benign_files) if benign_files else 0.0
    benign = [i for i in [*own, *together] if ipaddress.ip_address(i["host"]) in BENIGN_NET]
    return {
        "run": str(run_dir),
        "command": manifest.get("command", ""),
        "attack_flow_model": attack_model,
        "created": manifest.get("created"),
        "scenarios": rows,
        "detected": sum(1 for r in rows if r["incidents"]),
        "benign_device_hours": round(hours, 2),
        "benign_incidents": [
            {k: i[k] for k in ("gateway", "host", "kind", "packets", "top_peers")} for i in benign
        ],
        "false_per_device_hour": round(len(benign) / hours, 4) if hours else None,
        "merged_incidents": [
            {k: i[k] for k in ("host", "kind", "packets", "top_peers")} for i in together
        ],
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
        f"kind, each judged on its own capture; benign hosts: {len(doc['benign_incidents'])} "
        f"incidents in {doc['benign_device_hours']} device-hours. Merged (one gateway): "
        f"{len(doc['merged_incidents'])} incidents, "
        + ", ".join(f"{i['host']} {i['kind']}" for i in doc["merged_incidents"])
        + "."
    )
    return "\n".join(lines)
