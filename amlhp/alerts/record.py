"""The alert record: an incident's whole state at one revision, as an ``amlhp.alert`` v4
row (columns in :mod:`amlhp.wire.records`)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pyarrow as pa

from amlhp.alerts.fusion import confidence
from amlhp.alerts.kinds import severity, techniques
from amlhp.alerts.state import Incident, top
from amlhp.wire import alert_schema


def incident_id(gateway: str, host: str, role: str, kind: str, first_ns: int) -> str:
    """A stable id: the same incident has the same id in the stream and offline."""
    text = f"{gateway}|{host}|{role}|{kind}|{first_ns}"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _facts(facts: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in facts.items())


def alert_row(
    inc: Incident,
    status: str,
    reason: str,
    ts_ns: int,
    top_n: int,
    device: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """One ``amlhp.alert`` row: the incident's whole state at this revision; ``device``
    is the host's (device type, confidence) in the device inventory, when it has one."""
    ev = inc.evidence
    classes = top(ev.classes, len(ev.classes))
    peers, ports = top(ev.peers, top_n), top(ev.ports, top_n)
    findings = sorted(inc.findings.items(), key=lambda kv: (-kv[1][1], kv[0]))
    detectors = [name.split("@")[0] for name, _ in findings]
    score = inc.score or 1.0
    return {
        "gateway": inc.gateway,
        "ts_ns": ts_ns,
        "incident_id": inc.incident_id,
        "revision": inc.revision,
        "status": status,
        "reason": reason,
        "host": inc.host,
        "role": inc.role,
        "kind": inc.kind,
        "severity": severity(inc.kind, score),
        "confidence": confidence(score),
        "score": round(score, 4),
        "techniques": techniques(inc.kind, detectors),
        "evidence": [
            {
                "detector": name.split("@")[0],
                "scale": name.split("@")[1],
                "kind": f[0],
                "strength": f[1],
                "facts": _facts(f[2]),
            }
            for name, f in findings
        ],
        "first_seen_ns": ev.first_ns,
        "last_seen_ns": ev.last_ns,
        "opened_ns": inc.opened_ns,
        "packets": ev.packets,
        "mean_score": ev.mean_score,
        "classes": [c for c, _ in classes],
        "class_packets": [n for _, n in classes],
        "top_peers": [c for c, _ in peers],
        "top_peer_packets": [n for _, n in peers],
        "top_ports": [int(c) for c, _ in ports],
        "top_port_packets": [n for _, n in ports],
        "distinct_peers": len(ev.peers),
        "distinct_ports": len(ev.ports),
        "sample_seqs": list(ev.samples),
        "explanation_seq": ev.explain_seq,
        "model_version": inc.model_version,
        "device_type": device[0] if device else None,
        "device_confidence": device[1] if device else None,
        "suppressed_by": inc.suppressed_by,
        "feedback": inc.feedback,
        "community_ids": list(
            dict.fromkeys(ev.flows[str(s)] for s in ev.samples if str(s) in ev.flows)
        ),
        "emitted_at_ns": time.time_ns(),
    }


def alert_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Alert rows -> one ``amlhp.alert`` v4 batch."""
    return pa.RecordBatch.from_pylist(rows, schema=alert_schema())
