"""The benchmarks on the real broker, in quick mode: the code works and accounting is exact.

Figures are not asserted (speed claims live in the benchmark results, not in tests); the
result documents are: their fields, exact accounting of every offered packet, and that
the plots and tables are produced from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amlhp.benchmarks.pipeline_run import bench_settings, new_run_id
from amlhp.benchmarks.report import render
from amlhp.benchmarks.stages import sink_rate, tap_to_kafka
from amlhp.cli import build_app
from amlhp.data import BENCH_CAPTURE
from amlhp.settings import Settings
from amlhp.streams.topics import admin_client, delete_topics, ensure_pipeline_topics

pytestmark = pytest.mark.slow

MACHINE_FIELDS = ("cpu", "cores_usable", "memory_gib", "python", "torch", "kafka_broker")


def test_e2e_quick_json_plots_and_exact_accounting(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        build_app(),
        [
            "-b",
            kafka_bootstrap,
            "bench",
            "e2e",
            "--quick",
            "--out-dir",
            str(out),
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "e2e.json").read_text())
    assert doc["kind"] == "e2e"
    assert doc["end_to_end_packets_per_second"] > 0
    assert doc["end_to_end_packets_per_second"] == doc["capacity"]["achieved_pps"]
    assert len(doc["offered_rates"]) == len(doc["loads"]) == 2
    for rate, fraction in zip(doc["offered_rates"], doc["fractions_of_capacity"], strict=True):
        assert rate == pytest.approx(fraction * doc["capacity_packets_per_second"], rel=0.01)
    for field in MACHINE_FIELDS:
        assert doc["machine"][field], field
    for load in [doc["capacity"], *doc["loads"]]:
        acc = load["accounting"]
        assert acc["exact"], acc
        assert acc["missing"] == 0
        assert acc["duplicates"] == 0
        assert acc["in_both"] == 0
        assert acc["verdicts"] + acc["dead_letters"] == acc["packets_in"] == load["packets"]
        assert load["achieved_pps"] > 0
        lat = load["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["max"]
        series = load["series"]
        assert sum(series["verdicts_per_s"]) == acc["verdicts"]
    for load in doc["loads"]:
        # a paced load offers exactly rate x seconds packets
        assert load["packets"] == round(load["target_pps"] * doc["seconds_per_rate"])
        assert load["cpu_cores"]["worker"] > 0
    assert doc["lag_series"]
    assert "lag_records" in doc["lag_series"][0]
    assert doc["all_exact"] is True
    for png in ("e2e-timeline.png", "e2e-latency.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    table = render(doc)
    assert "| 150% of capacity |" in table
    assert "Machine: " in table
    shown = CliRunner().invoke(build_app(), ["bench", "table", str(out / "e2e.json")])
    assert shown.exit_code == 0
    assert shown.stdout.strip() == table.strip()


def test_tap_and_sink_stage_rates(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = bench_settings(kafka_settings, new_run_id(), partitions=2)
    ensure_pipeline_topics(settings)
    try:
        tap = tap_to_kafka(settings, BENCH_CAPTURE, 3000)
        sink = sink_rate(settings, BENCH_CAPTURE, 2500, tmp_path)
    finally:
        delete_topics(admin_client(settings.kafka_config()), settings.topics.all())
    assert tap["packets"] == 3000
    assert tap["packets_per_second"] > 0
    assert tap["mb_per_second"] > 0
    assert sink["rows"] == 2500
    assert sink["rows_per_second"] > 0
    assert sink["files"] >= 1
    doc = {"kind": "stages", "tap": tap, "sink": sink, "machine": {"cpu": "x"}}
    assert "Parquet sink" in render(doc)
    assert "tap -> Kafka" in render(doc)
