"""Incidents in the formats SIEMs ingest: Elastic Common Schema, Suricata EVE, CEF.

One function per format, each from the incident's JSON view
(:func:`amlhp.pipeline.incidents.incident_json`), so ``amlhp alerts --format`` offline and
a live export of the alert topic write the same records:

* **ECS** (NDJSON): ``event.kind: alert``, ``event.severity`` as Elastic Security's risk
  levels (21 low, 47 medium, 73 high, 99 critical), ``rule.name``, ``threat.technique.id``
  (MITRE ATT&CK), ``source``/``destination`` from the incident's role (an attacking host
  is the source; a target host the destination, its busiest peer the other side), and
  the whole incident under ``amlhp``; ``network.community_id`` the Community ID of the
  first sample packet's flow (all of them are in ``amlhp.community_ids``).
* **Suricata EVE** ``alert`` records: Suricata's timestamp format and severity (1 the
  highest), ``alert.signature_id`` stable per kind, ``alert.metadata`` with the ATT&CK
  ids as Suricata rules carry them, and ``community_id`` as Suricata writes it, so tools
  that read EVE take them as they are.
* **CEF** (ArcSight Common Event Format, for syslog): severity 0-10, the header and the
  extension escaped as the format requires (``|`` and ``\\`` in the header; ``=``, ``\\``
  and line breaks in values).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from amlhp import __version__

FORMATS = ("json", "ecs", "eve", "cef")
#: Elastic Security's risk levels, Suricata's priorities (1 highest), CEF's 0-10
ECS_SEVERITY = {"low": 21, "medium": 47, "high": 73, "critical": 99}
EVE_SEVERITY = {"low": 3, "medium": 2, "high": 1, "critical": 1}
CEF_SEVERITY = {"low": 3, "medium": 5, "high": 8, "critical": 10}
#: EVE signature ids: a local range, one per incident kind (stable across versions)
SIGNATURE_BASE = 9_100_000
KINDS = ("scan", "brute_force", "dos", "c2", "exfiltration", "exploit", "ics", "mitm")


def _sides(incident: dict[str, Any]) -> tuple[str | None, str | None, int | None]:
    """(source ip, destination ip, destination port) of an incident by its role."""
    peers = list(incident.get("top_peers") or {})
    ports = [int(p) for p in (incident.get("top_ports") or {})]
    peer = peers[0] if peers else None
    port = ports[0] if ports else None
    if incident.get("role") == "target":
        return peer, incident["host"], port
    return incident["host"], peer, port


def _signature(incident: dict[str, Any]) -> str:
    evidence = incident.get("evidence") or []
    why = f": {evidence[0]}" if evidence else ""
    return f"AMLHP {incident['kind']} by {incident['host']}{why}"


def ecs(incident: dict[str, Any]) -> dict[str, Any]:
    """One incident as an ECS document."""
    src, dst, port = _sides(incident)
    doc: dict[str, Any] = {
        "@timestamp": incident["opened"],
        "ecs": {"version": "8.11.0"},
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "module": "amlhp",
            "dataset": "amlhp.incident",
            "id": incident["incident_id"],
            "severity": ECS_SEVERITY.get(incident["severity"], 47),
            "risk_score": round(100 * float(incident["confidence"]), 1),
            "start": incident["first_seen"],
            "end": incident["last_seen"],
            "reason": "; ".join(incident.get("evidence") or []),
        },
        "rule": {
            "name": f"amlhp {incident['kind']}",
            "category": incident["kind"],
            "ruleset": "amlhp",
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "technique": {"id": list(incident.get("techniques") or [])},
        },
        "observer": {
            "name": incident["gateway"],
            "type": "ids",
            "vendor": "amlhp",
            "version": __version__,
        },
        "message": _signature(incident),
        "amlhp": incident,
    }
    if src:
        doc["source"] = {"ip": src}
    if dst:
        doc["destination"] = {"ip": dst, **({"port": port} if port is not None else {})}
    if flows := incident.get("community_ids"):
        doc["network"] = {"community_id": flows[0]}
    return doc


def _eve_time(iso: str) -> str:
    """``2026-12-02T00:59:28.975Z`` -> Suricata's ``2026-12-02T00:59:28.975000+0000``."""
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def eve(incident: dict[str, Any]) -> dict[str, Any]:
    """One incident as a Suricata EVE ``alert`` record."""
    src, dst, port = _sides(incident)
    kind = incident["kind"]
    record: dict[str, Any] = {
        "timestamp": _eve_time(incident["opened"]),
        "event_type": "alert",
        "host": incident["gateway"],
        "alert": {
            "action": "allowed",
            "gid": 1,
            "signature_id": SIGNATURE_BASE + (KINDS.index(kind) if kind in KINDS else 99),
            "rev": 1,
            "signature": _signature(incident),
            "category": kind,
            "severity": EVE_SEVERITY.get(incident["severity"], 2),
            "metadata": {
                "mitre_technique_id": list(incident.get("techniques") or []),
                "confidence": [str(incident["confidence"])],
                "amlhp_incident_id": [incident["incident_id"]],
            },
        },
        "amlhp": incident,
    }
    if src:
        record["src_ip"] = src
    if dst:
        record["dest_ip"] = dst
    if port is not None:
        record["dest_port"] = port
    if flows := incident.get("community_ids"):
        record["community_id"] = flows[0]
    return record


def _cef_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace("|", "\\|")


def _cef_value(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def cef(incident: dict[str, Any]) -> str:
    """One incident as a CEF line (for syslog)."""
    src, dst, port = _sides(incident)
    kind = incident["kind"]
    opened = datetime.fromisoformat(incident["opened"].replace("Z", "+00:00"))
    ext: dict[str, object] = {
        "rt": int(opened.timestamp() * 1000),
        "cat": kind,
        "dvchost": incident["gateway"],
        "cnt": incident["packets"],
        "cs1Label": "mitreTechniques",
        "cs1": ",".join(incident.get("techniques") or []),
        "cs2Label": "incidentId",
        "cs2": incident["incident_id"],
        "cfp1Label": "confidence",
        "cfp1": incident["confidence"],
        "msg": "; ".join(incident.get("evidence") or []),
    }
    if src:
        ext["src"] = src
    if dst:
        ext["dst"] = dst
    if port is not None:
        ext["dpt"] = port
    if flows := incident.get("community_ids"):
        ext["cs3Label"] = "communityId"
        ext["cs3"] = flows[0]
    header = [
        "CEF:0", "amlhp", "amlhp", __version__,
        str(SIGNATURE_BASE + (KINDS.index(kind) if kind in KINDS else 99)),
        f"amlhp {kind} by {incident['host']}", str(CEF_SEVERITY.get(incident["severity"], 5)),
    ]  # fmt: skip
    extension = " ".join(f"{k}={_cef_value(v)}" for k, v in ext.items())
    return "|".join(_cef_header(h) if i else h for i, h in enumerate(header)) + "|" + extension


def formatter(name: str) -> Callable[[dict[str, Any]], str]:
    """The line writer of a format (``json``: the incident as it is)."""
    if name == "cef":
        return cef
    shape: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
        "json": lambda i: i,
        "ecs": ecs,
        "eve": eve,
    }
    if name not in shape:
        raise ValueError(f"unknown format {name!r}; expected one of {', '.join(FORMATS)}")
    convert = shape[name]
    return lambda incident: json.dumps(convert(incident))
