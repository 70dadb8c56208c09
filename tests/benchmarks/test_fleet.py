"""``amlhp bench fleet`` on the real broker, small: every gateway of every fleet is
accounted for exactly, and the per-gateway costs are recorded (figures are not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from amlhp.cli import build_app

pytestmark = pytest.mark.slow


def test_fleet_runs_accounts_every_gateway_and_tabulates(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    result = CliRunner().invoke(
        build_app(),
        ["-b", kafka_bootstrap, "bench", "fleet", "--gateways", "2,30", "--loop", "1",
         "--out-dir", str(out), "--work-dir", str(tmp_path / "work")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "fleet.json").read_text())
    small, large = doc["fleets"]
    assert (small["gateways"], large["gateways"]) == (2, 30)
    for fleet in (small, large):
        assert fleet["accounting"]["exact"], fleet["accounting"]
        assert (
            fleet["accounting"]["verdicts"] + fleet["accounting"]["dead_letters"]
            == (fleet["packets"])
        )
        assert fleet["sink"]["flushes"] >= 1
        assert fleet["worker_series"] > 0
    # thirty gateways of one tap: messages of fewer packets, but no more files per flush
    # (one per date, whatever the gateways)
    assert large["packets_per_message"] < small["packets_per_message"]
    assert 1 <= large["sink"]["files_per_flush_max"] <= small["sink"]["files_per_flush_max"]
    assert "| 30 |" in result.output
