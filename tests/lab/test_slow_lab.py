"""The slow lab (``amlhp lab slow``): its drivers and scenarios, and a short real run whose
captures verify and raise incidents of their kinds naming the scenarios' addresses."""

from __future__ import annotations

import base64
import random
from pathlib import Path

import dpkt
import pytest

from amlhp.alerts.kinds import BRUTE_FORCE, C2, SCAN, kind_of
from amlhp.lab.dnsexfil import names, query
from amlhp.lab.scenario import AttackContext
from amlhp.lab.slow import SLOW_SCENARIOS, combos
from amlhp.lab.topology import Topology


def test_exfiltration_names_carry_the_data_under_one_domain() -> None:
    data = random.Random(3).randbytes(1000)
    out = names(data, "x.t.tunnel.test")
    assert all(n.endswith(".x.t.tunnel.test") for n in out)
    assert all(len(label) <= 63 for n in out for label in n.split("."))
    text = "".join("".join(n.split(".")[:-5]) for n in out).upper()
    assert base64.b32decode(text + "=" * (-len(text) % 8)) == data


def test_exfiltration_query_is_a_txt_question_for_the_name() -> None:
    msg = dpkt.dns.DNS(query("abc.x.t.tunnel.test", 77))
    assert msg.id == 77
    assert msg.qr == dpkt.dns.DNS_Q
    assert msg.rd
    assert [(q.name, q.type) for q in msg.qd] == [("abc.x.t.tunnel.test", dpkt.dns.DNS_TXT)]


def test_combos_give_every_guess_a_user_of_its_own(tmp_path: Path) -> None:
    ctx = AttackContext(Topology(), tmp_path, random.Random(1), 0, 1200.0, 1)
    lines = combos(ctx, 171, "slow-ftp").read_text().splitlines()
    users = [line.split(":", 1)[0] for line in lines]
    assert len(lines) == 171
    assert len(set(users)) == 171
    assert all(line.split(":", 1)[1] for line in lines)


def test_slow_scenarios_have_distinct_loopback_markers_and_known_kinds() -> None:
    topology = Topology()
    markers = [s.marker_address(topology) for s in SLOW_SCENARIOS if s.marker is not None]
    assert len(markers) == len(set(markers)) == len(SLOW_SCENARIOS) - 1
    assert all(m is not None and m.is_loopback for m in markers)
    kinds = [kind_of(s.label) for s in SLOW_SCENARIOS if s.marker is not None]
    assert kinds == [BRUTE_FORCE] * 4 + [SCAN, C2, C2]


@pytest.mark.slow
@pytest.mark.long  # 75 s of the 30 min make test allows: `make test-long`
def test_a_short_slow_run_verifies_and_raises_incidents(tmp_path: Path) -> None:
    """Half a minute of each attack beside the benign devices, all at once."""
    from amlhp.alerts.lab_run import lab_run_figures
    from amlhp.alerts.policy import AlertPolicy
    from amlhp.lab.exceptions import LabBusyError
    from amlhp.lab.runner import RunOptions
    from amlhp.lab.slow import SlowLabRun
    from amlhp.lab.verify import verify_run
    from amlhp.model.scorer import default_model_path, load_scorer
    from amlhp.settings import Settings
    from tests.support.lab import lab_workdir_for, require_lab

    require_lab()
    out = tmp_path / "slow"
    options = RunOptions(out=out, workdir=lab_workdir_for("slow-run"), command="pytest slow")
    try:
        manifest = SlowLabRun(options, minutes=0.5, hour_minutes=0.6).run()
    except LabBusyError as exc:
        pytest.skip(f"another lab run is in progress: {exc}")
    for entry in manifest["files"]:
        assert entry["classes"].get(entry["label"], 0) > 0, entry
    report = verify_run(out)
    assert report.ok, report.lines()
    policy = AlertPolicy.from_settings(Settings.model_validate({}))
    doc = lab_run_figures(out, load_scorer(default_model_path()), policy)
    assert [r["scenario"] for r in doc["scenarios"]] == [s.name for s in SLOW_SCENARIOS[1:]]
    found = {r["scenario"] for r in doc["scenarios"] if r["incidents"]}
    assert "slow_scan" in found, doc["scenarios"]  # 200 probes in 30 s, on its own
    # half a minute of guessing is too little on one service; the four guessers together
    # (one source address, 127.0.0.1) are one brute force
    assert ("127.0.0.1", "brute_force") in {(i["host"], i["kind"]) for i in doc["merged_incidents"]}
    assert doc["benign_incidents"] == []
