"""The allow-list: rules that mark incidents (never drop them), reloaded when the file
changes, refused when they would silence everything."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from amlhp.alerts.engine import Engine
from amlhp.alerts.exceptions import AlertsError
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.suppression import Suppressions, parse_rules
from amlhp.pipeline.incidents import latest
from tests.alerts.test_engine import SCANNER, T0, port_scan, verdicts

ROW: dict[str, Any] = {
    "gateway": "site-a-3", "host": "192.168.1.20", "kind": "scan",
    "classes": ["tcp_portscan", "os_scan"], "top_ports": [515, 80],
    "last_seen_ns": 1_800_000_000 * 10**9,
}  # fmt: skip


def rules(text: str) -> Suppressions:
    return Suppressions(None, parse_rules(text, "test"))


@pytest.mark.parametrize(
    ("rule", "matches"),
    [
        ("host: 192.168.1.0/24", True),
        ("host: 192.168.2.0/24", False),
        ("host: 192.168.1.20", True),
        ("gateway: 'site-a-*'", True),
        ("gateway: site-b", False),
        ("kind: [dos, scan]", True),
        ("kind: dos", False),
        ("class: os_scan", True),
        ("port: [631, 515]", True),
        ("port: 22", False),
        ("{host: 192.168.1.20, port: 22}", False),  # every field it names must match
        ("{kind: scan, expires: 2027-01-15T08:00:00Z}", True),  # expires after the incident
        ("{kind: scan, expires: 2027-01-15T07:59:59Z}", False),  # ... before it
    ],
)
def test_a_rule_matches_when_every_field_it_names_does(rule: str, matches: bool) -> None:
    scope = rule.strip("{}")
    text = f"rules:\n  - {{id: r1, reason: test, {scope}}}\n"
    found = rules(text).rule_for(ROW)
    assert (found is not None) == matches


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rules:\n  - {id: a, reason: x, kind: scan}\n  - {id: a, reason: y, port: 1}\n",
         "rule ids used twice"),
        ("rules:\n  - {id: a, reason: everything}\n", "would silence every incident"),
        ("rules:\n  - {id: a, reason: x, host: printer}\n", "neither an address nor a CIDR"),
        ("rules:\n  - {id: a, reason: x, kind: scan, hosts: 1.2.3.4}\n", "hosts"),
        ("rules:\n  - {id: a, kind: scan}\n", "reason"),
        ("rules: [", "suppression file test"),
    ],
)  # fmt: skip
def test_a_bad_file_is_refused_with_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(AlertsError, match=says):
        parse_rules(text, "test")


def test_the_engine_marks_covered_incidents_and_keeps_them() -> None:
    def run(suppressions: Suppressions | None) -> list[dict[str, Any]]:
        engine = Engine(AlertPolicy(), model_version="m1")
        engine.suppressions = suppressions
        return engine.process(verdicts(port_scan()), wall_s=0.0) + engine.flush_all("end")

    plain = run(None)
    allow = rules(
        f"rules:\n  - {{id: lab-scanner, reason: the lab's scanner, host: {SCANNER}}}\n"
        "  - {id: never, reason: nothing matches, port: 1}\n"
    )
    marked = run(allow)
    assert [r["incident_id"] for r in marked] == [r["incident_id"] for r in plain]
    assert plain
    assert all(r["suppressed_by"] is None for r in plain)
    assert all(r["suppressed_by"] == "lab-scanner" for r in marked)
    assert allow.matched["lab-scanner"] == len(marked)
    assert allow.unmatched() == ["never"]
    assert [i["suppressed_by"] for i in latest(marked)] == ["lab-scanner"]


def test_incidents_name_the_community_id_of_their_sample_flows() -> None:
    engine = Engine(AlertPolicy(), model_version="m1")
    rows = engine.process(verdicts(port_scan()), wall_s=0.0) + engine.flush_all("end")
    flows = rows[-1]["community_ids"]
    assert flows
    assert all(f.startswith("1:") and len(f) == 30 for f in flows)
    assert len(flows) == len(set(flows))
    assert rows[-1]["first_seen_ns"] >= T0


def test_the_file_is_reloaded_when_it_changes_and_a_broken_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "allow.yaml"
    allow = Suppressions.load(path)  # not there yet: no rules
    assert allow.rules == []
    path.write_text("rules:\n  - {id: one, reason: r, kind: scan}\n")
    assert allow.reload_if_changed()
    assert [r.id for r in allow.rules] == ["one"]
    assert not allow.reload_if_changed()  # unchanged
    path.write_text("rules: [")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert not allow.reload_if_changed()  # refused: the rules before it kept
    assert [r.id for r in allow.rules] == ["one"]
    path.write_text("rules:\n  - {id: two, reason: r, port: 22}\n")
    os.utime(path, (time.time() + 10, time.time() + 10))
    assert allow.reload_if_changed()
    assert [r.id for r in allow.rules] == ["two"]
    path.write_text("rules: [")
    with pytest.raises(AlertsError):  # at start a broken file stops the stage
        Suppressions.load(path)


def test_a_covered_incident_stays_covered_and_its_close_is_exported() -> None:
    from amlhp.alerts.export_stage import ExportOptions, exported

    engine = Engine(AlertPolicy(), model_version="m1")
    engine.suppressions = rules(f"rules:\n  - {{id: r1, reason: x, host: {SCANNER}}}\n")
    opened = engine.process(verdicts(port_scan()), wall_s=0.0)
    engine.suppressions = Suppressions(None)  # the rule is gone (removed, or expired)
    closed = engine.flush_all("end")
    assert [r["suppressed_by"] for r in opened + closed] == ["r1"] * len(opened + closed)
    options = ExportOptions()
    assert not any(exported(r, options) for r in opened)
    assert [r["status"] for r in closed if exported(r, options)] == ["closed"]
    assert all(exported(r, ExportOptions(include_suppressed=True)) for r in opened)
