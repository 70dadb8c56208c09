"""The labels file: globs, rules for mixed captures, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from amlhp.encoders.capture import encode_captures
from amlhp.model.exceptions import LabelsError
from amlhp.model.labels import (
    assign_labels,
    load_labels,
    merge_labels,
    parse_labels,
    parse_rule,
    restrict_to,
    rule_mask,
)
from tests.support import synth


def _mixed_capture(path: Path) -> Path:
    frames = [
        synth.ipv4(synth.udp(b"x" * 30, sport=53, dport=4000), 17, "8.8.8.8", "10.0.0.5"),
        synth.ipv4(synth.tcp(b"", sport=443, dport=5555), 6, "1.1.1.1", "10.0.0.5"),
        synth.ipv4(synth.udp(b"y" * 30, sport=123, dport=123), 17, "10.0.0.9", "10.0.0.5"),
        synth.ipv4(synth.tcp(b"z", sport=40000, dport=1883), 6, "10.0.0.7", "10.0.0.1"),
    ]
    records = [
        synth.Record(synth.ethernet(f), ts_ns=1_700_000_000_000_000_000 + i * 10**9)
        for i, f in enumerate(frames)
    ]
    return synth.write_pcap(path, records)


@pytest.fixture
def mixed(tmp_path: Path) -> pa.Table:
    return encode_captures([_mixed_capture(tmp_path / "mixed.pcap")])


def test_rules_by_proto_port_address_and_time(mixed: pa.Table) -> None:
    assert rule_mask(mixed, parse_rule({"proto": "udp"})).tolist() == [True, False, True, False]
    assert rule_mask(mixed, parse_rule({"src_port": 53})).tolist() == [True, False, False, False]
    assert rule_mask(mixed, parse_rule({"port": "1000-2000"})).tolist() == [
        False,
        False,
        False,
        True,
    ]
    assert rule_mask(mixed, parse_rule({"src_ip": "10.0.0.0/24"})).tolist() == [
        False,
        False,
        True,
        True,
    ]
    assert rule_mask(mixed, parse_rule({"ip": "10.0.0.1"})).tolist() == [False, False, False, True]
    assert rule_mask(mixed, parse_rule({"proto": "tcp", "dst_port": [5555, 80]})).tolist() == [
        False,
        True,
        False,
        False,
    ]
    window = parse_rule({"after": 1_700_000_001, "before": "2023-11-14T22:13:23+00:00"})
    assert rule_mask(mixed, window).tolist() == [False, True, True, False]


def test_first_matching_class_wins_and_unmatched_are_dropped(
    tmp_path: Path, mixed: pa.Table
) -> None:
    _mixed_capture(tmp_path / "mixed.pcap")
    spec = parse_labels(
        "classes:\n"
        "  dns: [{path: mixed.pcap, where: [{proto: udp, src_port: 53}]}]\n"
        "  udp_other: [{path: mixed.pcap, where: {proto: udp}}]\n"
        "  mqtt: [{path: mixed.pcap, where: [{dst_port: 1883}]}]\n",
        tmp_path,
    )
    entries = spec.files[(tmp_path / "mixed.pcap").resolve()]
    assert assign_labels(mixed, entries).tolist() == [0, -1, 1, 2]


def test_merged_labels_unite_classes_by_name_and_keep_ids(tmp_path: Path) -> None:
    for name in ("a.pcap", "b.pcap", "c.pcap"):
        _mixed_capture(tmp_path / name)
    base = parse_labels("classes:\n  benign: [a.pcap]\n  scan: [b.pcap]\n", tmp_path)
    more = parse_labels("classes:\n  dos: [c.pcap]\n  benign: [{path: c.pcap, where: "
                        "[{proto: udp}]}]\n", tmp_path)  # fmt: skip
    merged = merge_labels(base, more)
    assert merged.classes == ["benign", "scan", "dos"]
    claims = merged.files[tmp_path / "c.pcap"]
    assert [merged.classes[c.class_id] for c in claims] == ["dos", "benign"]
    assert claims[1].rules is not None
    assert merged.files[tmp_path / "a.pcap"][0].class_id == 0
    with pytest.raises(LabelsError, match="in both labels files"):
        merge_labels(merged, base)


def test_globs_base_and_exclude(tmp_path: Path) -> None:
    (tmp_path / "data" / "a").mkdir(parents=True)
    for name in ("a/x.pcap", "a/y.pcap", "z.pcap"):
        _mixed_capture(tmp_path / "data" / name)
    labels = tmp_path / "cfg" / "labels.yaml"
    labels.parent.mkdir()
    labels.write_text("base: ../data\nclasses:\n  one: ['**/*.pcap']\nexclude: [a/y.pcap]\n")
    spec = load_labels(labels)
    assert spec.classes == ["one"]
    assert sorted(p.name for p in spec.files) == ["x.pcap", "z.pcap"]
    only = restrict_to(spec, [tmp_path / "data" / "a"])
    assert [p.name for p in only.files] == ["x.pcap"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("classes: {}", "non-empty 'classes:'"),
        ("classes: [a, b]", "non-empty 'classes:'"),
        ("classes:\n  a: [nothing-here.pcap]\n", "matches no file"),
        ("classes:\n  a: [m.pcap]\n  b: [m.pcap]\n", "both 'a' and 'b'"),
        ("classes:\n  a: [{path: m.pcap, where: [{colour: red}]}]\n", "unknown rule keys"),
        ("classes:\n  a: [{path: m.pcap, where: [{src_port: 70000}]}]\n", "outside 0-65535"),
        ("classes:\n  a: [{path: m.pcap, where: [{proto: sctpx}]}]\n", "proto"),
        ("classes:\n  a: [{path: m.pcap, where: [{src_ip: 10.0.0.300}]}]\n", "src_ip"),
        ("classes: [", "not valid YAML"),
    ],
)
def test_bad_labels_files(tmp_path: Path, text: str, message: str) -> None:
    _mixed_capture(tmp_path / "m.pcap")
    with pytest.raises(LabelsError, match=message):
        parse_labels(text, tmp_path)


def test_missing_labels_file(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="cannot read"):
        load_labels(tmp_path / "nope.yaml")
