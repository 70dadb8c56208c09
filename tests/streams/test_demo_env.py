"""``amlhp -X ... demo`` on the real broker: its stages get every setting, its flow
verdicts, device inventory and incidents equal the offline commands', and its report
renders.

The demo's children build their settings from the environment that
:func:`amlhp.pipeline.children.child_env` hands them; each logs its effective settings
(secrets masked) at start, into the log file the demo keeps in ``<home>/var/demo``. A
``-X`` flag and an ``AMLHP_RDKAFKA_*`` variable of the parent must both show up there.
Both properties are harmless on the PLAINTEXT test broker. The same run's flow dataset,
device topic and incidents are checked against ``amlhp flows score``, ``amlhp devices``
and ``amlhp alerts`` on the same capture (one run of the demo serves all, to spare the
two shared cores), and its dataset gets ``amlhp report``, rendered in headless Chromium.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.pipeline.children import SETTINGS_LOG_PREFIX, child_env
from amlhp.settings import Settings
from tests.support.captures import SCANS_FROM, head_of_capture
from tests.support.flow_models import attack_model_at_validation_alarm

pytestmark = pytest.mark.slow

#: and a few from 115 s in: the scans end at 40 s, so their flows (60 s lifetime) end
#: before these packets and are applied (:mod:`amlhp.alerts.flow_evidence`)
LATER = (18_824, 40)
PACKETS = 600  # enough for every stage to do real work, few enough for two shared cores


def logged_settings(log: Path, stage: str) -> dict[str, Any]:
    """The settings a stage logged at start (the JSON after ``effective settings of X:``)."""
    marker = f"{SETTINGS_LOG_PREFIX} of {stage}: "
    for line in log.read_text(errors="replace").splitlines():
        if marker in line:
            value = json.loads(line.split(marker, 1)[1])
            assert isinstance(value, dict)
            return value
    raise AssertionError(f"{log} has no line with {marker!r}:\n{log.read_text()[-2000:]}")


#: what a flow verdict must agree on between the flow worker and ``amlhp flows score``
FLOW_COLUMNS = ("flow_id", "device_ip", "remote_ip", "proto", "device_port", "remote_port",
                "packets", "bytes", "first_seq", "last_seq", "context_flows", "label",
                "uncertain", "consistent", "due_ns", "device_initiated", "attack_kind",
                "attack_alarm")  # fmt: skip
INCIDENT_KEYS = ("incident_id", "host", "role", "kind", "severity", "packets", "evidence",
                 "first_seen", "last_seen", "opened")  # fmt: skip


def check_flows_equal_offline(
    summary: dict[str, Any], capture: Path, settings: Settings, attack_model: Path
) -> None:
    """The demo's flow dataset, device inventory and incidents against the offline
    commands on the same capture, as the demo's one gateway."""
    from amlhp.alerts.offline import alerts_from_captures
    from amlhp.alerts.policy import AlertPolicy
    from amlhp.flows.artifact import DEFAULT_MODEL
    from amlhp.flows.inventory_cli import flows_of_captures, inventory_of_flows
    from amlhp.model.scorer import default_model_path, load_scorer
    from amlhp.pipeline.dataset import read_verdicts
    from amlhp.pipeline.devices import identities
    from amlhp.pipeline.incidents import incident_json

    gateway = "demo-gw-1"
    stream = read_verdicts(Path(summary["flow_dataset"])).to_pylist()
    # what `amlhp flows score` and `amlhp alerts` make of the capture (both models)
    flows, version = flows_of_captures([capture], DEFAULT_MODEL, gateway, False, str(attack_model))
    offline = flows[gateway].to_pylist()
    assert offline, "the capture holds flows"
    ids = [r["flow_id"] for r in stream]
    assert len(ids) == len(set(ids)), "a flow verdict is in the dataset twice"
    assert sorted(tuple(r[c] for c in FLOW_COLUMNS) for r in stream) == sorted(
        tuple(r[c] for c in FLOW_COLUMNS) for r in offline
    )
    conf = {r["flow_id"]: (r["confidence"], r["attack_score"]) for r in offline}
    assert all(abs(r["confidence"] - conf[r["flow_id"]][0]) < 1e-5 for r in stream)
    assert all(abs(r["attack_score"] - conf[r["flow_id"]][1]) < 1e-5 for r in stream)
    assert sum(v["flows"] for v in summary["flow_verdicts_by_class"].values()) == len(stream)

    inventory = inventory_of_flows(flows, version).to_pylist()
    keys = ("gateway", "host", "device_type", "flows", "accepted_flows")
    assert [tuple(d[k] for k in keys) for d in summary["devices"]] == [
        tuple(d[k] for k in keys) for d in inventory
    ]
    assert any(d["device_type"].startswith("lab-") for d in inventory), inventory

    known = identities(inventory)
    run = alerts_from_captures([capture], load_scorer(default_model_path()),
                               AlertPolicy.from_settings(settings), gateway=gateway,
                               devices=known, flows=flows)  # fmt: skip
    assert run.incidents, "the scans raise incidents"
    # the alert stage waited for the flow worker's clock (the demo's flow wait), so the
    # flow evidence is the offline command's too; device types are checked below
    offline_view = sorted(str([incident_json(i)[k] for k in INCIDENT_KEYS]) for i in run.incidents)
    stream_view = sorted(str([i[k] for k in INCIDENT_KEYS]) for i in summary["alerts"])
    assert stream_view == offline_view
    # a row names its host's device as the stage knows it then: from the devices header
    # of the flow messages it waited for, so even an incident closed quiet by the later
    # packets knows its host; here every name is the whole capture's inventory's (offline)
    names = {i["incident_id"]: i["device_type"] for i in run.incidents}
    assert [i["device_type"] for i in summary["alerts"]] == [
        names[i["incident_id"]] for i in summary["alerts"]
    ]
    assert all(i["device_type"] is not None for i in summary["alerts"])
    with_flows = [i for i in summary["alerts"] if any("flow_model@" in e for e in i["evidence"])]
    assert with_flows, "no incident has flow evidence: the test shows nothing of it"


def tshark_count(pcap: Path, display_filter: str = "") -> int:
    """Packets Wireshark's tshark reads from ``pcap`` (matching the filter)."""
    import shutil

    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (Debian's tshark package: make setup)")
    args = [tshark, "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.number"]
    done = subprocess.run([*args, *(["-Y", display_filter] if display_filter else [])],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return len(done.stdout.split())


def check_extract(settings: Settings, capture: Path, env: dict[str, str], out: Path) -> None:
    """``amlhp extract --incident`` of the demo's incidents: pcaps that tshark reads, with
    the packets tshark itself finds in the capture for the incident's host and span."""
    from amlhp.pipeline.incidents import topic_incidents

    incidents = sorted(topic_incidents(settings), key=lambda i: -i["packets"])[:3]
    assert incidents
    for inc in incidents:
        pcap = out / f"{inc['incident_id']}.pcap"
        done = subprocess.run(
            [sys.executable, "-m", "amlhp.cli", "extract", "--incident", inc["incident_id"],
             "-o", str(pcap)], capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        stats = json.loads(done.stdout.strip().splitlines()[-1])
        first, last = inc["first_seen_ns"] / 1e9, inc["last_seen_ns"] / 1e9
        span = f"frame.time_epoch >= {first - 5e-7:.7f} && frame.time_epoch <= {last + 5e-7:.7f}"
        expected = tshark_count(capture, f"ip.addr == {inc['host']} && {span}")
        assert stats["packets"] == expected >= inc["packets"] > 0, (stats, expected, inc)
        assert tshark_count(pcap) == expected
        assert 0 < stats["snaplen"] < 1500  # cut at the tap: headers and P payload bytes


def test_x_flags_reach_the_demos_stages_and_its_flows_and_report_check_out(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = kafka_settings.model_copy(update={"home": home})
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    env["AMLHP_RDKAFKA_STATISTICS_INTERVAL_MS"] = "600000"
    capture = head_of_capture(
        DEMO_CAPTURE, tmp_path / "head.pcap", PACKETS, skip=SCANS_FROM, later=LATER
    )
    attacks = attack_model_at_validation_alarm(tmp_path / "attacks")
    args = ["-X", "socket.keepalive.enable=true", "demo", "--capture", str(capture),
            "--attack-model", str(attacks)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args, "--timeout", "240"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=480, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] is True
    assert summary["packets_in"] == PACKETS + LATER[1]
    assert Path(summary["verdict_dataset"]) == home / "out" / "verdicts"  # under the home

    check_flows_equal_offline(summary, capture, settings, attacks)
    check_extract(settings, capture, env, tmp_path / "extracts")

    for stage in ("worker", "sink", "flows"):
        got = logged_settings(home / "var" / "demo" / f"{stage}.log", stage)
        assert got["rdkafka"]["socket.keepalive.enable"] == "true", stage  # -X
        assert got["rdkafka"]["statistics.interval.ms"] == "600000", stage  # variable
        assert got["topic_raw"] == settings.topic_raw
        assert got["replication_factor"] == settings.replication_factor
        assert got["home"] == str(home)

    # the report of the demo's dataset, rendered in headless Chromium: latency from the
    # tap's publish time (a replayed capture's own timestamps are years old), and the
    # services of the malicious packets as address:port with whole port numbers
    from amlhp.dashboards.report import write_report
    from tests.support.browser import dumped_dom, table_rows

    report = tmp_path / "report.html"
    write_report(home / "out" / "verdicts", report)
    dom = dumped_dom(report.as_uri())
    header, *latency = table_rows(dom, "numbers-latency")
    assert header == ["measured from", "p50 (ms)", "p99 (ms)"]
    assert latency[0][0] == "tap publish"
    assert 0 < float(latency[0][1]) <= float(latency[0][2]) < 120_000, latency
    _, *services = table_rows(dom, "numbers-top-destinations")
    assert services, "the scans were decided malicious"
    address = re.compile(r"127(\.\d{1,3}){3}(:\d{1,5})?")
    assert all(address.fullmatch(row[1]) for row in services), services
