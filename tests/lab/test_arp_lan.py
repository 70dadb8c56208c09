"""The LAN scenario, short: network namespaces on a bridge, arpspoof, an nmap ARP sweep and
an nmap scan over IPv6.

The incidents come from the capture through the whole offline way (`amlhp alerts`:
encoder, verdict rows, engine), the stream's code (the alert stage's broker test checks
the stream raises the offline incidents, ARP cache poisoning included)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.encoders.capture import iter_encoded
from amlhp.lab.arp_lan import ND_SPOOFS, run_arp_lan
from amlhp.lab.netns_lan import ATTACKER, CAMERA, HOSTS, LAN, ROUTER
from amlhp.model.offline import verdict_columns
from amlhp.model.scorer import default_model_path, load_scorer
from tests.support.lab import require_lab

pytestmark = [pytest.mark.slow, pytest.mark.live]


def test_poisoning_and_sweep_raise_incidents_naming_the_attacker(tmp_path: Path) -> None:
    require_lab()
    manifest = run_arp_lan(tmp_path, seconds=18)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in namespaces for ns in (LAN, *(h.netns for h in HOSTS)))
    assert manifest["classes"]["arp"] > 254  # the sweep alone asks for every address
    assert manifest["classes"]["ok"] > 0  # the pings
    run = alerts_from_captures(
        [tmp_path / "arp.pcap"], load_scorer(default_model_path()), AlertPolicy()
    )
    found = {(i["host"], i["kind"]): i for i in run.incidents}
    assert set(found) == {
        (ATTACKER.address, "mitm"),
        (ATTACKER.address, "scan"),
        (ATTACKER.address6, "scan"),
    }
    spoof = found[ATTACKER.address, "mitm"]["evidence"]
    assert spoof[0]["detector"] == "arp_spoof"
    assert f"mac={ATTACKER.mac}" in spoof[0]["facts"]
    assert f"claimed={ROUTER.address}" in spoof[0]["facts"]
    assert found[ATTACKER.address, "scan"]["evidence"][0]["detector"] == "arp_sweep"
    assert found[ATTACKER.address6, "scan"]["evidence"][0]["detector"] == "scan_fanout"
    assert all(i["host"] not in (ROUTER.address, CAMERA.address) for i in run.incidents)
    # the IPv6 spoofing (atk6-fake_advertise6): its advertisements bind the router's
    # address to the attacker's MAC in the verdict rows, as ARP replies do
    scorer = load_scorer(default_model_path())
    claims = [
        (row["src_ip"], row["arp_op"], row["arp_mac"])
        for batch in iter_encoded([tmp_path / "arp.pcap"], scorer.encoder_config)
        for row in verdict_columns(batch, scorer).to_pylist()
        if row["icmp_type"] == 136 and row["arp_mac"] == ATTACKER.mac
    ]
    assert claims == [(ROUTER.address6, 2, ATTACKER.mac)] * ND_SPOOFS
