"""Each behaviour detector on tallies that must trigger it and ones that must not, and the
fusion of findings into a kind."""

from __future__ import annotations

import pytest

from amlhp.alerts.detectors import (
    Finding,
    beaconing,
    brute_force,
    dns_tunnel,
    flood,
    modbus_commands,
    model_evidence,
    reflection,
    run_detectors,
    scan_fanout,
)
from amlhp.alerts.fusion import fuse
from amlhp.alerts.kinds import severity, techniques
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.profile import Profile, Tally

#: the base thresholds as written (the shipped defaults scale them: see the last test)
P = AlertPolicy(behaviour_scale=1.0, model_min_share=0.5, model_packets_scale=1.0)
S = 1_000_000_000


def tally(**counts: object) -> Tally:
    sets = counts.pop("sets", {})
    t = Tally(**counts)  # type: ignore[arg-type]
    t.sets = {k: set(v) for k, v in sets.items()}  # type: ignore[attr-defined]
    return t


def test_scan_fanout_many_ports_mostly_refused() -> None:
    ports = {str(p) for p in range(1, 51)}
    scan = tally(out=50, refused=48, sets={"ports": ports, "dsts": {"10.0.0.1"}})
    (finding,) = scan_fanout(scan, "minutes", P)
    assert finding.kind == "scan"
    assert finding.strength >= 1.0
    # the same fan-out answered (a busy client) is no scan
    assert scan_fanout(tally(out=50, syn=50, synack=50, inn=50, sets={"ports": ports}),
                       "minutes", P) == []  # fmt: skip
    # many packets at few ports is a flood, not a scan
    assert scan_fanout(tally(out=5000, refused=5000, sets={"ports": ports}), "minutes", P) == []
    # few ports: below threshold
    (weak,) = scan_fanout(tally(out=5, refused=5, sets={"ports": {"1", "2", "3"}}), "minutes", P)
    assert weak.strength < 1.0


def test_scan_fanout_sweep_of_lan_hosts_counts_more_than_cloud_peers() -> None:
    lan = {f"192.168.1.{i}" for i in range(1, 31)}
    sweep = tally(out=30, syn=30, sets={"dsts": lan, "lan": lan, "ports": {"23"}})
    (finding,) = scan_fanout(sweep, "minutes", P)
    assert finding.strength >= 1.0
    cloud = {f"52.0.0.{i}" for i in range(1, 31)}  # a device in setup, no uplink
    (weak,) = scan_fanout(tally(out=30, syn=30, sets={"dsts": cloud, "ports": {"443"}}),
                          "minutes", P)  # fmt: skip
    assert weak.strength < 1.0


def test_brute_force_on_a_login_service_only() -> None:
    (finding,) = brute_force(tally(services={"10.0.0.1 22": 25}), "minutes", P)
    assert finding.kind == "brute_force"
    assert finding.strength >= 1.0
    assert finding.facts["port"] == 22
    assert brute_force(tally(services={"10.0.0.1 80": 500}), "minutes", P) == []
    (slow,) = brute_force(tally(services={"10.0.0.1 21": 12}), "hour", P)
    assert slow.strength < 1.0


def test_flood_unanswered_syns_and_unsolicited_packets_from_many() -> None:
    (syn,) = flood(tally(syn=3000, synack=10), "seconds", P)
    assert syn.detector == "syn_flood"
    assert syn.strength >= 1.0
    senders = {f"203.0.113.{i}" for i in range(100)}
    (recv,) = flood(tally(recv=5000, sets={"senders": senders}), "seconds", P)
    assert recv.detector == "recv_flood"
    assert recv.strength >= 1.0
    assert flood(tally(recv=5000, sets={"senders": {"203.0.113.1"}}), "seconds", P) == []
    assert flood(tally(syn=20, synack=20), "seconds", P) == []


def test_beaconing_regular_starts_to_one_peer() -> None:
    gap = 5 * S
    regular = tally(beacons={"198.51.100.7 80": [120, 0, gap, (0.1 * gap) ** 2 * 118]})
    (finding,) = beaconing(regular, "hour", P)
    assert finding.kind == "c2"
    assert finding.strength == pytest.approx(1.0)  # half a witness at most (weight 0.5)
    jittery = tally(beacons={"198.51.100.7 80": [120, 0, gap, (1.0 * gap) ** 2 * 118]})
    assert beaconing(jittery, "hour", P) == []
    slow = tally(beacons={"198.51.100.7 80": [120, 0, 600 * S, 0.0]})
    assert beaconing(slow, "hour", P) == []


def test_dns_tunnel_long_high_entropy_names() -> None:
    (finding,) = dns_tunnel(tally(dns=40, dns_long=30, dns_entropy=160.0), "minutes", P)
    assert finding.kind == "c2"
    assert finding.strength >= 1.0
    assert dns_tunnel(tally(dns=40, dns_long=0, dns_entropy=80.0), "minutes", P) == []


def test_modbus_commands_from_a_field_device_restarts_and_sweeps() -> None:
    names = {f.detector for f in modbus_commands(
        tally(field_requests=1, modbus_writes=1, modbus_diag=1,
              modbus_requests=40, modbus_exceptions=35), "minutes", P)}  # fmt: skip
    assert names == {"modbus_field_command", "modbus_restart", "modbus_recon"}
    # a master writing coils hundreds of times a minute is normal
    busy = tally(modbus_requests=1500, modbus_writes=1500)
    assert modbus_commands(busy, "minutes", P) == []


def test_reflection_backscatter() -> None:
    (finding,) = reflection(tally(recv_synack=300), "minutes", P)
    assert finding.kind == "dos"
    assert finding.strength >= 1.0
    assert reflection(tally(recv_synack=0), "minutes", P) == []


def test_model_evidence_needs_a_share_of_the_hosts_packets() -> None:
    busy_guesser = tally(out=100, inn=100, evidence={"brute_force": [150, 140.0]})
    (finding,) = model_evidence(busy_guesser, "minutes", P)
    assert finding.strength >= 1.0
    misread = tally(out=1000, inn=1000, evidence={"brute_force": [150, 140.0]})
    assert model_evidence(misread, "minutes", P) == []


def test_disabled_detectors_stay_silent() -> None:
    t = tally(services={"10.0.0.1 22": 25})
    assert run_detectors(t, "minutes", P)
    off = AlertPolicy(disabled_detectors=frozenset({"brute_force"}))
    assert run_detectors(t, "minutes", off) == []


def test_fusion_names_the_kind_from_behaviour_and_adds_weak_witnesses() -> None:
    model_c2 = Finding("model", "minutes", "c2", 2.0)
    guessing = Finding("brute_force", "hour", "brute_force", 0.6)
    verdict = fuse([model_c2, guessing], P)
    assert verdict.kind == "brute_force"  # the FTP guesser the model calls c2
    assert verdict.score == pytest.approx(0.6 + 0.5 * 2.0)
    assert fuse([guessing], P).kind is None
    # a beacon alone is half a witness
    assert fuse([Finding("beaconing", "hour", "c2", 1.0)], P).kind is None
    assert fuse([Finding("beaconing", "hour", "c2", 1.0), Finding("model", "hour", "c2", 1.0)],
                P).kind == "c2"  # fmt: skip


def test_severity_and_techniques() -> None:
    assert severity("scan", 1.0) == "low"
    assert severity("scan", 3.0) == "medium"
    assert severity("ics", 3.0) == "critical"
    assert techniques("brute_force", []) == ["T1110"]
    assert techniques("c2", ["dns_tunnel"]) == ["T1071.004", "T1048"]


def test_profile_rolls_windows_into_sketched_minutes_and_hour() -> None:
    prof = Profile()
    for window in range(3):
        for i in range(40):
            prof.seconds.note("dsts", f"10.0.{window}.{i}", 1024)
        prof.seconds.out += 40
        prof.roll_up(minutes_window=0, hour_window=0)
    assert prof.minutes.out == 120
    assert 100 <= prof.minutes.distinct("dsts") <= 140  # HLL, about 9% error
    restored = Profile.from_json(prof.to_json())
    assert restored.hour.distinct("dsts") == prof.hour.distinct("dsts")
    prof.roll_up(minutes_window=1, hour_window=0)  # a new 5-minute window starts afresh
    assert prof.minutes.out == 0
    assert prof.hour.out == 120


def test_the_fitted_factors_scale_the_base_thresholds() -> None:
    shipped = AlertPolicy()
    assert shipped.threshold("brute_attempts", "hour") == 30.0 * shipped.behaviour_scale
    assert shipped.threshold("model_packets", "seconds") == 20.0
    assert shipped.threshold("model_packets", "hour") == 200.0 * shipped.model_packets_scale
    assert shipped.threshold("field_requests", "minutes") == 1.0  # not a behaviour count


def test_settings_defaults_are_the_policy_defaults() -> None:
    """Every AMLHP_ALERT_* default equals the policy's, so the stream and a policy built
    in code (the fit, the tests) judge alike."""
    from amlhp.settings import Settings

    assert AlertPolicy.from_settings(Settings.model_validate({})) == AlertPolicy()
    tuned = Settings.model_validate({"alert_behaviour_scale": 3.0})
    assert AlertPolicy.from_settings(tuned).threshold("scan_ports", "hour") == 90.0
