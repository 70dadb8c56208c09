"""The scoring benchmark runs end to end (figures are measured by hand, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from amlhp.benchmarks.report import backends_table, render
from amlhp.benchmarks.score_bench import (
    ScorerChoice,
    compare_backends,
    run_fig10,
    run_score_bench,
)
from amlhp.cli import build_app
from tests.support import synth


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    records = [
        synth.Record(
            synth.ethernet(
                synth.ipv4(synth.tcp(b"\x30\x10" + bytes([i % 256]) * 20, dport=1883), 6)
            )
        )
        for i in range(300)
    ]
    synth.write_pcap(folder / "mqtt.pcap", records)
    return folder


def test_run_score_bench(captures: Path) -> None:
    torch.set_num_threads(1)
    one = ScorerChoice(threads=1)
    result = run_score_bench(choice=one, data=captures, batch_size=50, repeat=2, min_packets=200)
    assert result.packets_per_second > 0
    assert len(result.runs_pps) == 2
    assert result.packets_per_second == max(result.runs_pps)
    assert result.backend == "native"


def test_fig10_writes_json_and_png(captures: Path, tmp_path: Path) -> None:
    doc = run_fig10(
        data=captures,
        sizes=(1, 10, 100),
        repeat=1,
        min_packets=100,
        choice=ScorerChoice(threads=1),
        out_json=tmp_path / "fig10.json",
        out_png=tmp_path / "fig10.png",
    )
    assert [row["batch_size"] for row in doc["rows"]] == [1, 10, 100]
    assert all(row["ms_per_packet"] > 0 and row["peak_memory_mb"] >= 0 for row in doc["rows"])
    assert doc["rows"][2]["peak_memory_mb"] > doc["rows"][0]["peak_memory_mb"]
    assert json.loads((tmp_path / "fig10.json").read_text())["rows"] == doc["rows"]
    assert (tmp_path / "fig10.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_score_cli_json(captures: Path) -> None:
    result = CliRunner().invoke(
        build_app(),
        [
            "bench",
            "score",
            "--data",
            str(captures),
            "--batch-size",
            "20",
            "--packets",
            "100",
            "--repeat",
            "1",
            "--threads",
            "1",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["packets_per_second"] > 0


def test_compare_backends_times_each_backend_threads_and_size(captures: Path) -> None:
    doc = compare_backends(data=captures, sizes=(1, 100), backends=("numpy", "native"),
                           repeat=1, min_packets=100)  # fmt: skip
    got = {(r["backend"], r["threads"], r["batch_size"]) for r in doc["rows"]}
    assert got == {(b, t, s) for b in ("numpy", "native") for t in (1, 2) for s in (1, 100)}
    assert all(r["packets_per_second"] > 0 for r in doc["rows"])
    table = backends_table(doc).splitlines()
    assert render(doc) == backends_table(doc)  # what `amlhp bench table` prints
    assert table[0] == "| backend | threads | batch 1 | batch 100 |"
    assert [line.split("|")[1:3] for line in table[2:6]] == [
        [" native ", " 1 "],
        [" numpy ", " 1 "],
        [" native ", " 2 "],
        [" numpy ", " 2 "],
    ]
