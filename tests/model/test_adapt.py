"""The rails of ``amlhp model adapt``: what it refuses, what forcing overrides, what it records."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from amlhp.encoders.layout import EncoderConfig
from amlhp.model.adapt import AdaptRefused, WindowStats, decide, fingerprint
from amlhp.model.attack_reference import AttackReference
from amlhp.model.decision import BENIGN, MALICIOUS, Assessment
from amlhp.model.site_kinds import packet_kinds
from tests.support import synth

from .test_site import arrays, tcp

CLASSES = ["benign", "mqtt_bruteforce", "tcp_portscan"]


def window(packets: int = 40, malicious: int = 0) -> tuple[WindowStats, np.ndarray, np.ndarray]:
    """A gateway's window: MQTT clients publishing (one kind), scored 0.9 by the model."""
    header, payload = arrays(*[tcp(b"p" * 30, sport=50000 + i, dport=1883) for i in range(packets)])
    stats = WindowStats()
    kinds = packet_kinds(header, payload)
    stats.tally.add(kinds, np.full(packets, 0.9, np.float32), np.ones(packets, np.int64))
    stats.decisions.update(benign=packets - malicious, malicious=malicious)
    stats.packets = packets
    stats.gateways.add("gw-1")
    return stats, header, payload


def reference(site_like: bool) -> AttackReference:
    """Known attacks: MQTT brute force packets of the window's very kind (``site_like``)
    or of another kind, and a SYN scan."""
    brute = tcp(b"p" * 30, dport=1883) if site_like else tcp(b"p" * 300, dport=1883, window=512)
    header, payload = arrays(brute, brute, tcp(flags=0x02, dport=22, window=1024))
    return AttackReference(header, payload, np.array([1, 1, 2], np.int16), CLASSES, {})


def assess_all_malicious(score: float = 0.8) -> Any:
    def assess(header: np.ndarray, payload: np.ndarray) -> Assessment:
        n = header.shape[0]
        return Assessment(
            np.ones(n, np.int64),
            np.full((n, 3), 1 / 3, np.float32),
            np.full(n, score, np.float32),
            np.zeros(n, np.float32),
            np.full(n, MALICIOUS, np.int8),
        )

    return assess


def run(stats: WindowStats, ref: AttackReference, **kw: Any) -> Any:
    return decide(
        stats, base_version="base-v1", gateways=("gw-1",), assess=assess_all_malicious(),
        reference=ref, adapted_on={"kind": "captures", "files": ["a.pcap"]}, **kw,
    )  # fmt: skip


def test_a_quiet_window_becomes_a_guarded_profile_with_its_record() -> None:
    stats, header, payload = window()
    adapted = run(stats, reference(site_like=True))
    memory = adapted.profile.memory
    assert len(memory) == 1
    # the brute force packets share the window's kind and score below its ceiling: the
    # guard lowered the ceiling under them, so they stay malicious, the site's own pass
    ref = reference(site_like=True)
    judged = memory.judge(packet_kinds(ref.header, ref.payload), assess_all_malicious()(
        ref.header, ref.payload))  # fmt: skip
    assert judged.tolist() == [MALICIOUS] * 3
    own = memory.judge(packet_kinds(header, payload), assess_all_malicious(0.7)(header, payload))
    assert (own == BENIGN).all()
    record = adapted.record
    assert record["forced"] is False
    assert record["refusals_overridden"] == []
    assert record["fingerprint"] == fingerprint([{"kind": "captures", "files": ["a.pcap"]}])
    assert record["window"]["packets"] == 40
    assert record["guard"]["restricted_kinds"] == 1
    assert record["guard"]["worst_drop"] == 0.0
    assert record["guard"]["restricted"] == [
        "ipv4 tcp to port 1883 flags=0x18 payload 16-31 B (like mqtt_bruteforce)"
    ]
    assert adapted.profile.gateways == ("gw-1",)


def test_a_window_with_incidents_is_refused_unless_forced() -> None:
    stats, _, _ = window()
    stats.incidents = [{"kind": "scan", "host": "10.0.0.9", "severity": "high"}]
    with pytest.raises(AdaptRefused) as refused:
        run(stats, reference(site_like=False))
    assert refused.value.reasons[0] == "1 incident(s) in the window: scan on 10.0.0.9 (high)"
    assert "--force" in refused.value.reasons[-1]
    adapted = run(stats, reference(site_like=False), force=True)
    assert adapted.record["forced"] is True
    assert adapted.record["refusals_overridden"][0].startswith("1 incident(s)")


def test_a_window_the_model_calls_mostly_malicious_is_refused() -> None:
    stats, _, _ = window(packets=40, malicious=30)
    with pytest.raises(AdaptRefused, match=r"calls 75\.0% of the window malicious"):
        run(stats, reference(site_like=False))
    assert run(stats, reference(site_like=False), max_malicious=0.8).record["forced"] is False


def test_a_profile_that_would_miss_known_attacks_is_refused_even_forced() -> None:
    stats, _, _ = window()
    with pytest.raises(AdaptRefused, match=r"mqtt_bruteforce loses 100\.0%.*not overridable"):
        run(stats, reference(site_like=True), restrict=False, force=True)


def test_a_window_without_repeated_kinds_teaches_nothing() -> None:
    stats, _, _ = window(packets=1)
    with pytest.raises(AdaptRefused, match="nothing to learn"):
        run(stats, reference(site_like=False), force=True)


def test_window_stats_count_decisions_and_skip_unscored_rows() -> None:
    from amlhp.encoders.fast import encode_batch
    from amlhp.model.offline import verdict_columns
    from amlhp.model.scorer import load_scorer

    scorer = load_scorer()
    frames = [(synth.lt.ETHERNET, synth.ethernet(tcp(b"p" * 30, dport=1883))) for _ in range(5)]
    frames.append((synth.lt.ETHERNET, synth.ethernet(synth.arp(1), synth.ETHERTYPE_ARP)))
    encoded = encode_batch(synth.raw_batch(frames, gateway="gw-7"), scorer.encoder_config)
    stats = WindowStats()
    stats.add(encoded, verdict_columns(encoded, scorer))
    assert stats.packets == 6
    assert sum(stats.decisions.values()) == 5  # the ARP frame is not scored
    assert stats.tally.counts.tolist() == [5]
    assert stats.gateways == {"gw-7"}


def test_the_study_splits_each_capture_at_its_own_middle_time() -> None:
    from amlhp.model.adapt_study import first_half
    from amlhp.model.dataset import LabelledPackets

    n = 6
    data = LabelledPackets(
        header=np.zeros((n, 128), np.uint8),
        payload=np.zeros((n, 64), np.uint8),
        labels=np.zeros(n, np.int64),
        file_ids=np.array([0, 0, 0, 1, 1, 1]),
        flow_ids=np.zeros(n, np.int64),
        classes=["benign"],
        files=["a.pcap", "b.pcap"],
        config=EncoderConfig(),
        ts_ns=np.array([0, 4, 10, 1000, 1001, 3000]),
    )
    assert first_half(data).tolist() == [True, True, False, True, True, False]
