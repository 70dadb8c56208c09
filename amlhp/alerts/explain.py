"""``amlhp explain CAPTURE --incident ID``: the flows and sampled packets behind an incident.

Why from a capture: an incident's id is stable (gateway, host, role, kind, first packet:
:func:`amlhp.alerts.record.incident_id`), so the incident an operator reads on the alert
topic has the same id in ``amlhp alerts`` on the same packets (a tap's pcap, or the window
``amlhp replay`` re-reads). Given the capture and the gateway id, this finds the incident
as the stream raised it and explains it with both models:

* **flows**: the host's flow records during the incident (the host as a device: its local
  side), scored as the flow worker scores them, each with its exact group Shapley values
  (metadata, addresses and ports, packets, payload, context) for its class;
* **packets**: the incident's ``sample_seqs``, explained by the packet model over its
  named header fields and the payload (Shapley value sampling, needs torch).

The result is one JSON document, a text rendering, and a PNG with one panel per side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amlhp.alerts.exceptions import AlertsError


def explain_incident(
    capture: Path,
    incident_id: str,
    *,
    gateway: str,
    settings: Any,
    packet_model: Path | None = None,
    flow_model: Path | None = None,
    max_flows: int = 10,
    max_packets: int = 5,
    samples: int = 16,
) -> dict[str, Any]:
    """The incident ``incident_id`` of ``capture`` (as gateway ``gateway``), explained."""
    from amlhp.alerts.offline import alerts_from_captures
    from amlhp.alerts.policy import AlertPolicy
    from amlhp.flows.artifact import DEFAULT_MODEL, load_flow_model
    from amlhp.flows.inventory_cli import flows_of_captures, inventory_of_flows
    from amlhp.flows.online import FlowScorer, score_capture
    from amlhp.model.packet_explain import explain_capture
    from amlhp.model.scorer import default_model_path, load_scorer
    from amlhp.pipeline.devices import identities
    from amlhp.pipeline.incidents import incident_json

    flows_path = flow_model or DEFAULT_MODEL
    verdicts, version = flows_of_captures([capture], flows_path, gateway)
    inventory = identities(inventory_of_flows(verdicts, version).to_pylist())
    scorer = load_scorer(packet_model or default_model_path())
    run = alerts_from_captures(
        [capture],
        scorer,
        AlertPolicy.from_settings(settings),
        gateway=gateway,
        devices=inventory,
        flows=verdicts,
    )
    found = [row for row in run.incidents if row["incident_id"] == incident_id]
    if not found:
        known = ", ".join(f"{r['incident_id']} ({r['host']} {r['kind']})" for r in run.incidents)
        raise AlertsError(
            f"no incident {incident_id} in {capture} as gateway {gateway!r}; "
            f"its incidents: {known or 'none'}"
        )
    incident = found[0]
    fm = load_flow_model(flows_path)
    plain = verdicts[gateway].to_pylist() if gateway in verdicts else []
    lo, hi = int(incident["first_seen_ns"]), int(incident["last_seen_ns"])
    # the flows that raised the attack flow model's alarm first: the incident's evidence
    behind = sorted(
        (
            r
            for r in plain
            if r["device_ip"] == incident["host"] and r["end_ns"] >= lo and r["ts_ns"] <= hi
        ),
        key=lambda r: (not r["attack_alarm"], r["ts_ns"]),
    )[:max_flows]
    explained = score_capture(
        capture, FlowScorer(fm, explain_ids=frozenset(r["flow_id"] for r in behind)), gateway
    ).to_pylist()
    ids = {r["flow_id"] for r in behind}
    flows = [_flow_doc(r, fm.meta.get("refiner", {})) for r in explained if r["flow_id"] in ids]
    packets = explain_capture(
        capture,
        packet_model,
        max_packets=max_packets,
        samples=samples,
        seqs=[int(s) for s in incident["sample_seqs"] or []],
    )
    return {
        "incident": incident_json(incident),
        "flows_of_host": sum(1 for r in plain if r["device_ip"] == incident["host"]),
        "flows": flows,
        "packets": packets,
        "flow_model": fm.version,
    }


def _flow_doc(row: dict[str, Any], refiner: dict[str, Any]) -> dict[str, Any]:
    from amlhp.flows.shapley import GROUPS

    attributions = row["attributions"] or [0.0] * len(GROUPS)
    return {
        "flow_id": row["flow_id"],
        "remote": f"{row['remote_ip']}:{row['remote_port']}",
        "device_port": row["device_port"],
        "proto": row["proto"],
        "packets": row["packets"],
        "label": row["label"],
        "confidence": round(float(row["confidence"]), 4),
        "uncertain": bool(row["uncertain"]),
        "consistent": row["consistent"],
        "attributions": {g: round(float(v), 4) for g, v in zip(GROUPS, attributions, strict=True)},
        "threshold": refiner.get("threshold"),
        "attack_kind": row.get("attack_kind"),
        "attack_score": None if row.get("attack_score") is None else round(row["attack_score"], 4),
        "attack_alarm": row.get("attack_alarm"),
    }


def explanation_text(doc: dict[str, Any]) -> list[str]:
    """The explanation as lines of text, for a terminal."""
    inc = doc["incident"]
    device = inc.get("device_type") or "?"
    lines = [
        f"incident {inc['incident_id']}: {inc['kind']} ({inc['severity']}), {inc['role']} "
        f"{inc['host']} [{device}], {inc['packets']} packets, {inc['first_seen']} .. "
        f"{inc['last_seen']}",
        *(f"  evidence: {e}" for e in inc["evidence"]),
        f"flows of the host during the incident ({len(doc['flows'])} shown of "
        f"{doc['flows_of_host']} of the host; flow model {doc['flow_model']}):",
    ]
    for f in doc["flows"]:
        top = sorted(f["attributions"].items(), key=lambda kv: -abs(kv[1]))[:3]
        why = ", ".join(f"{g} {v:+.2f}" for g, v in top)
        mark = " (uncertain)" if f["uncertain"] else ""
        alarm = f"; ALARM {f['attack_kind']} {f['attack_score']:.2f}" if f["attack_alarm"] else ""
        lines.append(
            f"  {f['remote']} proto {f['proto']} port {f['device_port']}, {f['packets']} "
            f"packets: {f['label']} {f['confidence']:.2f}{mark}; {why}{alarm}"
        )
    if not doc["flows"]:
        lines.append("  none: the host is not a local device of this gateway (its side is remote)")
    lines.append(f"sampled packets ({len(doc['packets'])}):")
    for p in doc["packets"]:
        top = list(p["attributions"].items())[:4]
        why = ", ".join(f"{k} {v:+.2f}" for k, v in top)
        lines.append(
            f"  seq {p['seq']} {p['src']} -> {p['dst']}: {p['label']} {p['probability']:.2f}; {why}"
        )
    return lines


def plot_explanation(doc: dict[str, Any], path: Path) -> None:
    """One PNG: the mean flow attributions by group, and the first packet's top fields."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    flows = doc["flows"]
    if flows:
        groups = list(flows[0]["attributions"])
        means = [sum(f["attributions"][g] for f in flows) / len(flows) for g in groups]
        left.barh(groups[::-1], means[::-1], color="tab:orange")
        left.axvline(0, color="black", lw=0.6)
        left.set_title(f"{len(flows)} flows of the host: mean Shapley value", fontsize=9)
    else:
        left.text(0.5, 0.5, "no flow of the host as a device", ha="center", va="center")
        left.set_axis_off()
    packets = doc["packets"]
    if packets:
        items = list(packets[0]["attributions"].items())[:10][::-1]
        right.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
        right.axvline(0, color="black", lw=0.6)
        p = packets[0]
        right.set_title(f"packet {p['seq']}: {p['label']} ({p['probability']:.2f})", fontsize=9)
    else:
        right.text(0.5, 0.5, "no sampled packet", ha="center", va="center")
        right.set_axis_off()
    inc = doc["incident"]
    fig.suptitle(
        f"incident {inc['incident_id']}: {inc['kind']} by {inc['host']} "
        f"[{inc.get('device_type') or '?'}]",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["explain_incident", "explanation_text", "plot_explanation"]
