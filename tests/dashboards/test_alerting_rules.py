"""The Prometheus alerting rules of a deployment (``dashboards/alerting``): valid for
``promtool check rules``, right by ``promtool test rules``, and about metrics and labels
the stages really export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from amlhp.metrics.definitions import process_metrics

RULES = Path(__file__).parents[2] / "dashboards" / "alerting"
#: series that come from outside the metric definitions (Prometheus, the lag collector)
OTHER = {"up", "amlhp_consumer_lag_seconds", "amlhp_consumer_lag_records"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian's prometheus package: make setup)")
    return found


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = _promtool()
    for args in (["check", "rules", "amlhp-rules.yml"], ["test", "rules", "amlhp-rules.test.yml"]):
        done = subprocess.run(
            [promtool, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout


def test_the_rules_read_series_the_stages_export() -> None:
    from prometheus_client import generate_latest

    metrics = process_metrics()
    exported = set(re.findall(r"^# TYPE (\S+)", generate_latest(metrics.registry).decode(), re.M))
    names = {n + "_total" for n in exported} | exported | OTHER
    rules = yaml.safe_load((RULES / "amlhp-rules.yml").read_text())["groups"][0]["rules"]
    used = {m for r in rules for m in re.findall(r"\b(amlhp_\w+|up)\b", r["expr"])}
    assert used <= names, used - names
    assert len(rules) >= 6
