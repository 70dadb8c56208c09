"""The IPv4/IPv6 twin runs, short (a tenth of each attack), and the comparison of the
families: labels from the manifest, figures per class and binary."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from amlhp.lab.exceptions import LabError
from amlhp.lab.netns_lan import HOSTS, LAN
from amlhp.lab.twins import ATTACKS, run_twins
from amlhp.lab.twins_quality import compare, judged_rows, read_manifest
from amlhp.model.scorer import default_model_path, load_scorer
from tests.support.lab import require_lab


def test_compare_counts_per_family_and_class() -> None:
    rows = [
        *[(4, "tcp_portscan", "tcp_portscan", True)] * 3,
        (4, "tcp_portscan", "os_scan", False),
        *[(6, "tcp_portscan", "tcp_portscan", True)] * 2,
        *[(6, "tcp_portscan", "benign", False)] * 2,
        *[(4, "benign", "benign", False)] * 4,
        (6, "benign", "benign", True),
    ]
    result = compare(rows)
    scan = result["classes"]["tcp_portscan"]
    assert scan["ipv4"] == {"packets": 4, "recall": 75.0, "flagged": 75.0}
    assert scan["ipv6"] == {"packets": 4, "recall": 50.0, "flagged": 50.0}
    assert result["gaps_points"]["tcp_portscan.recall"] == -25.0
    assert result["binary"]["ipv6"]["attacks_called_attack"] == 50.0
    assert result["binary"]["ipv6"]["benign_flagged"] == 100.0
    assert result["widest_gap_points"] == 100.0
    assert not result["goal_met"]
    assert compare([(4, "benign", "benign", False), (6, "benign", "benign", False)])["goal_met"]


@pytest.mark.slow
@pytest.mark.live
def test_twin_runs_give_every_attack_in_both_families(tmp_path: Path) -> None:
    require_lab()
    manifest = run_twins(tmp_path, scale=0.1)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in namespaces for ns in (LAN, *(h.netns for h in HOSTS)))
    windows = {(w["family"], w["class"]) for w in manifest["windows"]}
    assert windows == {(family, name) for family in (4, 6) for name in ATTACKS}
    rows = judged_rows(tmp_path, load_scorer(default_model_path()))
    packets = compare(rows)["classes"]
    assert set(packets) == {"benign", *ATTACKS}
    for name, entry in packets.items():  # every class seen in both families, alike in size
        four, six = entry["ipv4"]["packets"], entry["ipv6"]["packets"]
        assert four > 0, name
        assert six > 0, name
        assert 0.5 < six / four < 2.0, (name, four, six)


def test_a_folder_that_is_not_a_twin_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(LabError, match="cannot read"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"capture": "arp.pcap"}')
    with pytest.raises(LabError, match="not a manifest of `amlhp lab twins`"):
        read_manifest(tmp_path)
