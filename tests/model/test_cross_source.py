"""Leave-one-source-out: sources from paths, the operator's figures, and a real tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amlhp.model.cross_source import (
    binary_figures,
    cross_source_markdown,
    run_cross_source,
    source_of,
)
from amlhp.model.decision import is_benign_class as is_benign
from amlhp.model.train import TrainConfig
from tests.support.synth import Record, ethernet, ipv4, tcp, udp, write_pcap


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("/work/shared/data/public/stopddos/pkt.TCP.synflood.spoofed.pcap", "stopddos"),
        ("../shared/data/public/iot_sentinel/captures_IoT_Sentinel/Aria/Setup-A-1.pcap",
         "iot_sentinel"),
        ("/work/main/var/lab/full/syn_flood.pcap", "lab"),
        ("/data/other/capture.pcap", "other"),
    ],
)  # fmt: skip
def test_a_capture_belongs_to_the_folder_under_public_or_to_the_lab(path: str, source: str) -> None:
    assert source_of(path) == source


def test_benign_classes_are_benign_and_the_rest_attacks() -> None:
    assert is_benign("benign")
    assert is_benign("benign_iot")
    assert not is_benign("dos_synflood")
    assert not is_benign("benignish")


def test_binary_figures_count_what_an_operator_would() -> None:
    classes = ["benign", "syn", "scan"]
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    # one benign packet called "scan" (a false alarm); an attack called the *other* attack
    # still counts as flagged; one syn packet called benign is missed
    pred = np.array([0, 0, 0, 2, 2, 0, 2, 2])
    fig = binary_figures(labels, pred, classes)
    assert fig["benign_packets"] == 4
    assert fig["attack_packets"] == 4
    assert fig["benign_not_malicious"] == 0.75
    assert fig["attack_flagged"] == 0.75
    assert fig["accuracy_binary"] == 0.75
    only_benign = binary_figures(labels[:4], pred[:4], classes)
    assert only_benign["attack_flagged"] is None


def _captures(root: Path) -> Path:
    """Two sources with benign traffic and one with a SYN flood; a labels file for them."""
    public = root / "public"
    for source, base in (("alpha", 10), ("beta", 20)):
        folder = public / source
        folder.mkdir(parents=True)
        benign = [
            Record(ethernet(ipv4(udp(b"sensor %d" % i, sport=5000 + i, dport=5683), 17,
                                 src=f"10.{base}.0.{i % 50 + 1}", dst=f"10.{base}.1.1")))
            for i in range(120)
        ]  # fmt: skip
        write_pcap(folder / "benign.pcap", benign)
    syn = [
        Record(ethernet(ipv4(tcp(sport=1024 + i, dport=80, flags=0x02, window=512), 6,
                             src=f"172.16.{i % 200}.{i % 250 + 1}", dst="10.20.1.1")))
        for i in range(150)
    ]  # fmt: skip
    write_pcap(public / "beta" / "syn.pcap", syn)
    labels = root / "labels.yaml"
    labels.write_text(
        "classes:\n  benign: [public/*/benign.pcap]\n  dos_synflood: [public/beta/syn.pcap]\n"
    )
    return labels


def test_a_tiny_run_holds_each_source_out_once_and_trains_without_it(tmp_path: Path) -> None:
    labels = _captures(tmp_path)
    out = tmp_path / "results"
    doc = run_cross_source(
        labels,
        out,
        mask_fields=("ip.src", "ip.dst"),
        max_per_class=1000,
        config=TrainConfig(epochs=1, batch_size=32, threads=1),
    )
    rows = {r["source"]: r for r in doc["rows"]}
    assert set(rows) == {"alpha", "beta"}
    # holding out alpha leaves beta's 120 benign + 150 SYN for training (90% of them: the
    # rest validates); holding out beta leaves only alpha's benign packets
    assert rows["alpha"]["train_packets"] == round(0.9 * 270)
    assert rows["beta"]["train_packets"] == round(0.9 * 120)
    assert rows["alpha"]["kind"] == "benign"
    assert rows["alpha"]["packets"] == rows["alpha"]["benign_packets"] == 120
    assert rows["beta"]["kind"] == "mixed"
    assert rows["beta"]["kinds_never_seen"] == ["dos_synflood"]  # only beta has the flood
    for row in rows.values():
        assert 0.0 <= row["benign_not_malicious"] <= 1.0
    assert 0.0 <= rows["beta"]["attack_flagged"] <= 1.0
    assert doc["random_split"]["packets"] > 0
    # the three-way decision per fold, each judged by a calibration fitted without it
    decided = {r["source"]: r for r in doc["decision"]["rows"]}
    assert set(decided) == {"alpha", "beta"}
    assert decided["beta"]["per_class"]["dos_synflood"]["packets"] == 150
    assert (out / "folds" / "beta.npz").exists()
    written = json.loads((out / "cross-source.json").read_text())
    assert written["rows"] == doc["rows"]
    table = (out / "cross-source.md").read_text()
    assert table == cross_source_markdown(doc)
    assert "| alpha | benign | 120 |" in table
    assert "random 8:1:1" in table


def test_evaluate_malicious_reports_classes_the_model_never_learnt(tmp_path: Path) -> None:
    import json as _json

    from typer.testing import CliRunner

    from amlhp.cli import build_app

    labels = _captures(tmp_path)
    text = labels.read_text().replace("dos_synflood", "never_seen_attack")
    labels.write_text(text)
    result = CliRunner().invoke(
        build_app(),
        ["evaluate", "model/artifacts/amlhp-default", "-l", str(labels), "--side", "all",
         "--malicious", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    shares = _json.loads(result.stdout)["classes"]
    assert set(shares) == {"benign", "never_seen_attack"}
    assert shares["benign"]["packets"] == 240
    assert shares["never_seen_attack"]["packets"] == 150
    for v in shares.values():
        assert 0.0 <= v["called_malicious"] <= 1.0


def test_benign_classes_can_have_their_own_training_cap(tmp_path: Path) -> None:
    labels = _captures(tmp_path)
    doc = run_cross_source(
        labels,
        tmp_path / "results",
        mask_fields=("ip.src", "ip.dst"),
        max_per_class=50,
        max_benign=100,
        config=TrainConfig(epochs=1, batch_size=32, threads=1),
        sources=["alpha"],
        with_random=False,
    )
    (row,) = doc["rows"]
    # beta left for training: 100 of its 120 benign packets, 50 of its 150 SYN packets
    assert row["train_packets"] == round(0.9 * 150)
    assert doc["max_benign"] == 100
    assert "random_split" not in doc
