"""Analysts' verdicts applied by the engine: a false positive closes its incident (and, with
consent, suppresses the host's next ones), ack and confirm revise it, once each."""

from __future__ import annotations

from typing import Any

import pytest

from amlhp.alerts.engine import Engine
from amlhp.alerts.exceptions import AlertsError
from amlhp.alerts.feedback import apply_feedback, feedback_row, suppression_rule
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.suppression import Suppressions
from amlhp.pipeline.incidents import latest
from tests.alerts.test_engine import SCANNER, port_scan, verdicts

DAY_NS = 86_400 * 10**9


def open_scan() -> tuple[Engine, dict[str, Any]]:
    engine = Engine(AlertPolicy(), model_version="m1")
    engine.suppressions = Suppressions(None)
    rows = engine.process(verdicts(port_scan()), partition=0, wall_s=0.0)
    (incident,) = latest(rows)
    assert incident["status"] != "closed"
    return engine, incident


def test_a_false_positive_closes_its_incident_once() -> None:
    engine, incident = open_scan()
    item = feedback_row(incident, "false_positive", note="the lab's scanner", analyst="ann")
    assert apply_feedback(engine, 1, [item]) == ([], set())  # not this partition's gateway
    rows, done = apply_feedback(engine, 0, [item])
    assert done == {incident["incident_id"]}
    assert [(r["status"], r["reason"], r["feedback"]) for r in rows] == [
        ("closed", "false_positive", "false_positive")
    ]
    assert rows[0]["revision"] == incident["revision"] + 1
    assert engine.store.incidents() == []
    assert apply_feedback(engine, 0, [item])[0] == []  # again (a restart): nothing


def test_ack_and_confirm_revise_and_stay_on_later_rows() -> None:
    engine, incident = open_scan()
    rows, _ = apply_feedback(engine, 0, [feedback_row(incident, "ack")])
    assert [(r["status"], r["reason"], r["feedback"]) for r in rows] == [("updated", "ack", "ack")]
    assert apply_feedback(engine, 0, [feedback_row(incident, "ack")])[0] == []
    rows, _ = apply_feedback(engine, 0, [feedback_row(incident, "confirmed")])
    assert rows[0]["feedback"] == "confirmed"
    closed = engine.flush_all("end")
    assert [(r["status"], r["feedback"]) for r in closed] == [("closed", "confirmed")]


def test_a_false_positive_with_consent_suppresses_the_hosts_next_incidents() -> None:
    engine, incident = open_scan()
    item = feedback_row(incident, "false_positive", suppress_days=7, at_ns=incident["ts_ns"])
    rule = suppression_rule(item)
    assert rule is not None
    assert (rule.id, rule.host, rule.kind) == (f"fp-{incident['incident_id']}", SCANNER, ["scan"])
    assert engine.suppressions is not None
    assert engine.suppressions.add(rule)
    assert not engine.suppressions.add(rule)  # known
    apply_feedback(engine, 0, [item])
    later = port_scan(start_seq=10_000, t0=incident["ts_ns"] + DAY_NS)
    rows = engine.process(verdicts(later), partition=0, wall_s=0.0)
    assert rows
    assert {r["suppressed_by"] for r in rows} == {rule.id}
    start = incident["ts_ns"] + 8 * DAY_NS
    rows = engine.process(verdicts(port_scan(start_seq=20_000, t0=start)), partition=0)
    new = [r for r in rows if r["first_seen_ns"] >= start]
    assert new
    assert {r["suppressed_by"] for r in new} == {None}  # the rule expired


@pytest.mark.parametrize(
    ("verdict", "days", "says"),
    [("maybe", None, "expected one of"), ("ack", 3.0, "only with a false positive"),
     ("false_positive", 0.0, "days > 0")],
)  # fmt: skip
def test_a_bad_verdict_is_refused(verdict: str, days: float | None, says: str) -> None:
    _, incident = open_scan()
    with pytest.raises(AlertsError, match=says):
        feedback_row(incident, verdict, suppress_days=days)
