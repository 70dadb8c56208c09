"""Incidents as SIEMs ingest them: ECS, Suricata EVE and CEF, from ``amlhp alerts -f``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

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
    "community_ids": ["1:LQU9qZlK+B5F3KDmev6m5PMibrg="], "suppressed_by": None,
}  # fmt: skip
HERE = Path(__file__).parent


def _leaves(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _leaves(value, f"{path}.")
        else:
            out.append((path, value))
    return out


def _ecs_type_ok(kind: str, value: Any) -> bool:
    import ipaddress
    from datetime import datetime

    if kind in ("keyword", "match_only_text"):
        return isinstance(value, str)
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "date":
        return isinstance(value, str) and bool(datetime.fromisoformat(value.replace("Z", "+00:00")))
    if kind == "ip":
        return isinstance(value, str) and bool(ipaddress.ip_address(value))
    raise AssertionError(f"unknown ECS type {kind}")


def check_ecs(doc: dict[str, Any]) -> None:
    """Every field of an ECS document is in the ECS field reference (tests/alerts/
    ecs_fields.yaml) with that type (arrays of it too), categorization values allowed."""
    import yaml

    ref = yaml.safe_load((HERE / "ecs_fields.yaml").read_text())
    custom = tuple(f"{n}." for n in ref["custom_namespaces"])
    assert doc["ecs"]["version"] == ref["version"]
    for path, value in _leaves(doc):
        if path.startswith(custom):
            continue
        assert path in ref["fields"], f"{path} is not an ECS {ref['version']} field"
        values = value if isinstance(value, list) else [value]
        kind = ref["fields"][path]
        assert all(_ecs_type_ok(kind, v) for v in values), (path, kind, value)
        if path in ref["allowed"]:
            assert set(values) <= set(ref["allowed"][path]), (path, values)


def check_eve(record: dict[str, Any]) -> None:
    """An EVE alert record valid for tests/alerts/eve-alert.schema.json."""
    import jsonschema

    schema = json.loads((HERE / "eve-alert.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.path))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_ecs_and_eve_checks_catch_a_wrong_record() -> None:
    doc = ecs(INCIDENT)
    doc["event"]["severity"] = "high"  # a keyword where ECS has a long
    with pytest.raises(AssertionError):
        check_ecs(doc)
    with pytest.raises(AssertionError, match="not an ECS"):
        check_ecs({**ecs(INCIDENT), "source": {"address_ip": "1.2.3.4"}})
    record = eve(INCIDENT)
    record["alert"]["severity"] = "1"
    with pytest.raises(AssertionError, match="severity"):
        check_eve(record)


def test_ecs_and_eve_records_follow_their_references() -> None:
    check_ecs(ecs(INCIDENT))
    check_eve(eve(INCIDENT))
    assert ecs(INCIDENT)["network"]["community_id"] == INCIDENT["community_ids"][0]
    assert eve(INCIDENT)["community_id"] == INCIDENT["community_ids"][0]
    assert "cs3=1:LQU9qZlK+B5F3KDmev6m5PMibrg\\=" in cef(INCIDENT)


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


def test_amlhp_alerts_writes_records_that_follow_their_references(tmp_path: Path) -> None:
    """One run of ``amlhp alerts -f ecs`` on the demo capture: every document follows the
    ECS reference, and the EVE and CEF records of the same incidents (the same functions
    ``-f eve`` and ``-f cef`` call) follow theirs."""
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts", str(DEMO_CAPTURE), "-f", "ecs"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=True,
    )  # fmt: skip
    docs = [json.loads(x) for x in done.stdout.splitlines()]
    assert len(docs) > 10
    for doc in docs:
        check_ecs(doc)
        check_eve(eve(doc["amlhp"]))
        assert cef(doc["amlhp"]).startswith("CEF:0|amlhp|")
    assert all(d["amlhp"]["community_ids"] for d in docs)
    assert all(d["network"]["community_id"] == d["amlhp"]["community_ids"][0] for d in docs)
