"""Learning a site: packet kinds, the kind memory, profiles on disk and how they judge."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amlhp.encoders.arrays import model_inputs
from amlhp.encoders.fast import encode_batch
from amlhp.encoders.layout import EncoderConfig
from amlhp.model.decision import BENIGN, MALICIOUS, UNCERTAIN, Assessment
from amlhp.model.exceptions import ArtifactError
from amlhp.model.site import KindMemory, SiteProfile, SiteProfiles, guard
from amlhp.model.site_kinds import FIELDS, describe_kind, kind_fields, packet_kinds
from tests.support import synth

MASKED = EncoderConfig(mask_fields=("ip.src", "ip.dst", "ip.id", "ip.ttl", "ip.checksum"))
LINUX_SYN = bytes.fromhex("020405b40402080a000000010000000001030307")


def arrays(*packets: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Header and payload arrays of IPv4 packets, as the encoder makes them."""
    frames = [(synth.lt.ETHERNET, synth.ethernet(p)) for p in packets]
    header, payload, ok = model_inputs(encode_batch(synth.raw_batch(frames), MASKED))
    assert ok.all()
    return header, payload


def tcp(payload: bytes = b"", **kw: object) -> bytes:
    ip = {k: kw.pop(k) for k in ("src", "dst", "ttl", "ident") if k in kw}
    return synth.ipv4(synth.tcp(payload, **kw), 6, **ip)  # type: ignore[arg-type]


def test_a_conversation_is_one_kind_whatever_changes_per_packet() -> None:
    same = [
        tcp(b"x" * 20, sport=50000, dport=1883, seq=1, ident=1, ttl=64, src="10.0.0.1"),
        tcp(b"y" * 21, sport=50123, dport=1883, seq=99, ack=7, ident=2, ttl=60, src="10.0.0.9"),
    ]
    kinds = packet_kinds(*arrays(*same))
    assert kinds[0] == kinds[1]


@pytest.mark.parametrize(
    ("other", "field"),
    [
        (tcp(b"x" * 20, sport=50000, dport=1883, flags=0x11), "tcp_flags"),
        (tcp(b"x" * 20, sport=1883, dport=50000), "direction"),
        (tcp(b"x" * 20, sport=50000, dport=8883), "service_port"),
        (tcp(b"x" * 200, sport=50000, dport=1883), "payload_log2"),
        (tcp(b"x" * 20, sport=50000, dport=1883, window=512), "window_log2"),
        (synth.ipv4(synth.udp(b"x" * 20, sport=50000, dport=1883), 17), "proto"),
    ],
)
def test_what_an_attack_tool_changes_makes_another_kind(other: bytes, field: str) -> None:
    base = tcp(b"x" * 20, sport=50000, dport=1883)
    header, payload = arrays(base, other)
    fields = kind_fields(header, payload)
    assert fields[0, FIELDS.index(field)] != fields[1, FIELDS.index(field)]
    kinds = packet_kinds(header, payload)
    assert kinds[0] != kinds[1]


def test_syn_stacks_differ_by_their_options() -> None:
    os_syn = tcp(flags=0x02, options=LINUX_SYN, dport=80)
    flood_syn = tcp(flags=0x02, window=512, dport=80)
    header, payload = arrays(os_syn, flood_syn)
    fields = kind_fields(header, payload)
    assert fields[0, FIELDS.index("tcp_option")] == 2 + 1  # MSS first
    assert fields[1, FIELDS.index("tcp_option")] == 0
    assert len(set(packet_kinds(header, payload).tolist())) == 2


def test_a_kind_reads_as_an_operator_would_say_it() -> None:
    header, payload = arrays(
        tcp(b"x" * 20, sport=50000, dport=1883, flags=0x18),
        synth.ipv4(synth.icmp_echo(), 1),
    )
    fields = kind_fields(header, payload)
    assert describe_kind(fields[0]) == "ipv4 tcp to port 1883 flags=0x18 payload 16-31 B"
    assert describe_kind(fields[1]).startswith("ipv4 icmp type=8 code=0")


def memory_of(
    kinds: list[int], scores: list[float], classes: list[int] | None = None, min_count: int = 2
) -> KindMemory:
    ids = np.array(classes if classes is not None else [1] * len(kinds))
    return KindMemory.learn(
        np.array(kinds, np.uint64), np.array(scores, np.float32), ids, min_count
    )


def test_memory_keeps_kinds_seen_often_enough_and_their_highest_score() -> None:
    memory = memory_of([5, 5, 5, 9, 7, 7], [0.1, 0.9, 0.4, 0.99, 0.2, np.nan])
    assert memory.kinds.tolist() == [5]  # 9 seen once; 7 once with a score (NaN: ARP)
    assert memory.counts.tolist() == [3]
    assert memory.ceilings.tolist() == pytest.approx([0.9])
    normal = memory.normal(np.array([5, 5, 9], np.uint64), np.array([0.9, 0.91, 0.1]), [1, 1, 1])
    assert normal.tolist() == [True, False, False]


def test_memory_knows_which_classes_the_model_gave_each_kind() -> None:
    memory = memory_of([5, 5, 6, 6], [0.9, 0.9, 0.9, 0.9], classes=[1, 3, 2, 2])
    assert memory.classes.tolist() == [0b1010, 0b100]
    kinds = np.array([5, 5, 5, 6], np.uint64)
    normal = memory.normal(kinds, np.full(4, 0.5), [1, 3, 2, 2])
    assert normal.tolist() == [True, True, False, True]
    assert memory.any_class().normal(kinds, np.full(4, 0.5), [1, 3, 2, 2]).all()


def test_restricting_lowers_a_ceiling_below_the_known_attacks_only() -> None:
    memory = memory_of([1, 1, 2, 2], [0.95, 0.5, 0.8, 0.3])
    attacks = np.array([1, 1, 3], np.uint64)
    restricted, count = memory.restrict(attacks, np.array([0.7, 0.9, 0.1]), [1, 1, 1])
    assert count == 1
    assert restricted.ceilings[0] < 0.7 <= memory.ceilings[0]
    assert restricted.ceilings[1] == memory.ceilings[1]
    normal = restricted.normal(np.array([1, 1], np.uint64), np.array([0.69, 0.7]), [1, 1])
    assert normal.tolist() == [True, False]


def assessment(scores: list[float], decisions: list[int]) -> Assessment:
    n = len(scores)
    return Assessment(
        np.ones(n, np.int64),
        np.full((n, 2), 0.5, np.float32),
        np.array(scores, np.float32),
        np.zeros(n, np.float32),
        np.array(decisions, np.int8),
    )


def test_judging_only_turns_site_normal_flags_benign() -> None:
    memory = memory_of([1, 1], [0.9, 0.9])
    a = assessment([0.9, 0.95, 0.9, 0.2], [MALICIOUS, MALICIOUS, UNCERTAIN, BENIGN])
    kinds = np.array([1, 1, 2, 1], np.uint64)
    assert memory.judge(kinds, a).tolist() == [BENIGN, MALICIOUS, UNCERTAIN, BENIGN]


def test_guard_reports_every_attack_class_before_and_after() -> None:
    memory = memory_of([1, 1, 2, 2], [0.95, 0.95, 0.95, 0.95])
    a = assessment([0.9, 0.9, 0.9, 0.9], [MALICIOUS] * 4)
    kinds = np.array([1, 1, 2, 3], np.uint64)
    labels = np.array([1, 1, 2, 2])
    classes = ["benign", "syn_flood", "scan"]
    _unguarded, report = guard(memory, kinds, a, labels, classes, restrict=False)
    assert report.per_class["syn_flood"] == {"packets": 2, "before": 1.0, "after": 0.0}
    assert report.worst == ("syn_flood", 1.0)
    guarded, report = guard(memory, kinds, a, labels, classes)
    assert report.restricted_kinds == 2
    assert report.worst[1] == 0.0
    assert guarded.judge(kinds, a).tolist() == [MALICIOUS] * 4


def profile(gateways: tuple[str, ...] = ("gw-1",), base: str = "base-v1") -> SiteProfile:
    return SiteProfile(memory_of([1, 1, 2, 2], [0.9, 0.9, 0.5, 0.5]), gateways, base)


def test_profiles_round_trip_and_refuse_tampering(tmp_path: Path) -> None:
    meta = profile().save(tmp_path / "site", {"adapted_on": {"kind": "captures"}})
    assert meta["version"].startswith("base-v1+site-")
    loaded = SiteProfile.load(tmp_path / "site")
    assert loaded.version == meta["version"]
    assert loaded.gateways == ("gw-1",)
    assert loaded.memory.kinds.tolist() == [1, 2]
    assert loaded.meta["adapted_on"] == {"kind": "captures"}

    doc = json.loads((tmp_path / "site.json").read_text())
    doc["gateways"] = ["gw-1", "gw-2"]
    (tmp_path / "site.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="edited"):
        SiteProfile.load(tmp_path / "site")
    (tmp_path / "site.json").write_text("{")
    with pytest.raises(ArtifactError, match="unreadable"):
        SiteProfile.load(tmp_path / "site")


def test_a_folder_serves_profiles_of_this_base_model_one_per_gateway(tmp_path: Path) -> None:
    profile(("gw-1",)).save(tmp_path / "a", {})
    profile(("gw-1", "gw-2")).save(tmp_path / "b", {})
    profile(("gw-3",), base="other").save(tmp_path / "c", {})
    sites = SiteProfiles.load_dir(tmp_path, "base-v1")
    assert sorted(sites.by_gateway) == ["gw-1", "gw-2"]
    assert any("c.json: learnt over other" in why for why in sites.skipped)
    assert any("gateway gw-1 already has a profile" in why for why in sites.skipped)
    assert not SiteProfiles.load_dir(tmp_path / "none", "base-v1")


def test_profiles_judge_their_gateways_only_and_name_who_judged() -> None:
    header, payload = arrays(tcp(b"x" * 20, dport=1883), tcp(b"x" * 20, dport=1883))
    kind = int(packet_kinds(header[:1], payload[:1])[0])
    sites = SiteProfiles(
        {"gw-1": SiteProfile(memory_of([kind, kind], [0.9, 0.9]), ("gw-1",), "base-v1")}
    )
    a = assessment([0.8, 0.8], [MALICIOUS, MALICIOUS])
    judged, versions = sites.judge(["gw-1", "gw-2"], header, payload, a, "base-v1")
    assert judged.decision.tolist() == [BENIGN, MALICIOUS]
    assert a.decision.tolist() == [MALICIOUS, MALICIOUS], "the input is not changed"
    assert versions[0].startswith("base-v1+site")
    assert versions[1] == "base-v1"
    assert judged.malicious_score.tolist() == a.malicious_score.tolist()


def test_the_worker_metrics_name_each_gateway_a_profile_judges() -> None:
    from types import SimpleNamespace

    from amlhp.metrics.definitions import PipelineMetrics

    metrics = PipelineMetrics()
    p = profile(("gw-1", "gw-2"))
    holder = SimpleNamespace(
        current=SimpleNamespace(version="base-v1", sites=SiteProfiles({"gw-1": p, "gw-2": p})),
        loaded=1,
        refused=0,
    )
    metrics.sync_model(holder)

    def served() -> set[tuple[str, str]]:
        samples = next(iter(metrics.site_profiles.collect())).samples
        return {(s.labels["gateway"], s.labels["version"]) for s in samples if s.value == 1}

    assert served() == {("gw-1", p.version), ("gw-2", p.version)}
    holder.current = SimpleNamespace(version="base-v1", sites=SiteProfiles())
    metrics.sync_model(holder)
    assert served() == set()
