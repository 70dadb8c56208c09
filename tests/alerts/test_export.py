"""Incidents as SIEMs ingest them: ECS, Suricata EVE and CEF, from ``amlhp alerts -f``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from amlhp.alerts.export import cef, ecs, eve
from amlhp.data import DEMO_CAPTURE

INCIDENT: dict[str, Any] = {
    "incident_id": "7fef8e00783595d5", "gateway": "gw|1", "host": "127.66.0.1",
    "role": "source", "kind": "brute_force", "severity": "high", "confidence": 0.95,
    "techniques": ["T1110.001"], "evidence": ["brute_force@hour (brute_force, 3.00): "
    "attempts=90 port=22"], "status": "opened", "first_seen": "2026-12-02T00:59:28.952Z",
    "last_seen": "2026-12-02T01:19:29.098Z", "opened": "2026-12-02T01:04:28.975Z",
    "packets": 599, "score": 0.87, "classes": {"ssh_bruteforce": 599},
    "top_peers": {"127.20.0.4": 599}, "top_ports": {"22": 599}, "sample_seqs": [1],
    "explanation_seq": None, "model_version": "m",
}  # fmt: skip


def test_ecs_names_the_attacker_the_rule_and_the_technique() -> None:
    doc = ecs(INCIDENT)
    assert doc["@timestamp"] == INCIDENT["opened"]
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["severity"] == 73
    assert doc["source"] == {"ip": "127.66.0.1"}
    assert doc["destination"] == {"ip": "127.20.0.4", "port": 22}
    assert doc["threat"]["technique"]["id"] == ["T1110.001"]
    assert doc["rule"]["name"] == "amlhp brute_force"
    target = ecs({**INCIDENT, "role": "target"})
    assert target["source"]["ip"] == "127.20.0.4"
    assert target["destination"]["ip"] == "127.66.0.1"


def test_eve_is_a_suricata_alert_record() -> None:
    record = eve(INCIDENT)
    assert record["event_type"] == "alert"
    assert record["timestamp"] == "2026-12-02T01:04:28.975000+0000"
    assert (record["src_ip"], record["dest_ip"], record["dest_port"]) == (
        "127.66.0.1", "127.20.0.4", 22,
    )  # fmt: skip
    assert record["alert"]["severity"] == 1
    assert record["alert"]["metadata"]["mitre_technique_id"] == ["T1110.001"]
    assert isinstance(record["alert"]["signature_id"], int)


def test_cef_escapes_its_header_and_extension() -> None:
    line = cef(INCIDENT)
    assert line.startswith("CEF:0|amlhp|amlhp|")
    header = line.split("|")
    assert header[6] == "8"  # high
    assert "attempts\\=90 port\\=22" in line  # '=' escaped in a value
    assert "dvchost=gw|1" in line  # '|' needs no escape in the extension
    assert "src=127.66.0.1" in line
    assert "dst=127.20.0.4" in line
    assert "dpt=22" in line
    assert "rt=1796173468975" in line


def test_amlhp_alerts_writes_each_format_one_record_per_incident(tmp_path: Path) -> None:
    counts = {}
    for fmt in ("ecs", "eve", "cef"):
        done = subprocess.run(
            [sys.executable, "-m", "amlhp.cli", "alerts", str(DEMO_CAPTURE), "-f", fmt],
            capture_output=True, text=True, timeout=300, cwd=tmp_path, check=True,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        counts[fmt] = len(lines)
        if fmt == "cef":
            assert all(x.startswith("CEF:0|amlhp|") for x in lines)
        else:
            docs = [json.loads(x) for x in lines]
            kind = "event" if fmt == "ecs" else "event_type"
            assert all(kind in d for d in docs)
    assert counts["ecs"] == counts["eve"] == counts["cef"] > 10
