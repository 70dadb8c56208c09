"""``amlhp explain CAPTURE --incident ID``: the flows and packets behind one incident."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amlhp.alerts.exceptions import AlertsError
from amlhp.alerts.explain import explain_incident, explanation_text
from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.data import DEMO_CAPTURE
from amlhp.model.scorer import default_model_path, load_scorer
from amlhp.settings import Settings
from tests.support.captures import SCANS_FROM, head_of_capture

pytestmark = pytest.mark.slow
GATEWAY = "gw-explain"


def test_an_incident_is_explained_by_its_hosts_flows_and_its_sample_packets(
    tmp_path: Path,
) -> None:
    capture = head_of_capture(DEMO_CAPTURE, tmp_path / "head.pcap", 600, skip=SCANS_FROM)
    settings = Settings.model_validate({})
    run = alerts_from_captures(
        [capture], load_scorer(default_model_path()), AlertPolicy.from_settings(settings),
        gateway=GATEWAY,
    )  # fmt: skip
    # the flood's source: a loopback host, so a device of the flow model's local networks
    incident = run.incidents[0]
    assert incident["host"].startswith("127.")
    doc = explain_incident(
        capture, incident["incident_id"], gateway=GATEWAY, settings=settings, max_flows=4,
        max_packets=2, samples=4,
    )  # fmt: skip
    assert doc["incident"]["incident_id"] == incident["incident_id"]
    assert doc["incident"]["device_type"] is not None
    assert 0 < len(doc["flows"]) <= min(4, doc["flows_of_host"])
    for flow in doc["flows"]:
        assert flow["flow_id"].split("|")[1] == incident["host"]
        # exact Shapley values of a probability: they sum to p(flow) - p(nothing)
        assert any(v != 0.0 for v in flow["attributions"].values())
        assert abs(sum(flow["attributions"].values())) <= 1.0
    assert doc["packets"], "the incident's sample packets are explained"
    assert {p["seq"] for p in doc["packets"]} <= set(incident["sample_seqs"])
    text = explanation_text(doc)
    assert incident["incident_id"] in text[0]
    assert any(line.startswith("  seq ") for line in text)

    with pytest.raises(AlertsError, match=incident["incident_id"]):
        explain_incident(capture, "0" * 16, gateway=GATEWAY, settings=settings)


def test_the_command_writes_text_json_and_a_png(tmp_path: Path) -> None:
    capture = head_of_capture(DEMO_CAPTURE, tmp_path / "head.pcap", 600, skip=SCANS_FROM)
    listed = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts", str(capture), "-g", GATEWAY, "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    first = json.loads(listed.stdout.splitlines()[0])
    png = tmp_path / "incident.png"
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "explain", str(capture), "--incident",
         first["incident_id"], "-g", GATEWAY, "--max-packets", "1", "--samples", "4",
         "--png", str(png), "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["incident"]["incident_id"] == first["incident_id"]
    assert png.stat().st_size > 10_000
    wrong = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "explain", str(capture), "--incident", "nope",
         "-g", GATEWAY],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert wrong.returncode != 0
    assert "no incident nope" in wrong.stderr
    assert "Traceback" not in wrong.stderr
