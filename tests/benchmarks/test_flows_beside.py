"""``amlhp bench flows-beside`` on the real broker: both modes exactly accounted, the flow
worker's pace measured once it has read the whole raw topic. Figures are not asserted
(they live in benchmarks/results/flows-beside.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from amlhp.benchmarks.e2e import E2EConfig
from amlhp.benchmarks.flows_beside import flows_beside_table, run_flows_beside
from amlhp.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.long]  # about 40 s: `make test-long`


def test_capacity_without_and_with_the_flow_worker(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    doc = run_flows_beside(
        kafka_settings, E2EConfig.quick_config(), rounds=1, work_dir=tmp_path / "work"
    )
    assert doc["exact"], doc["runs"]
    assert set(doc["runs"]) == {"packets_only", "with_flows"}
    (alone,) = doc["runs"]["packets_only"]
    (beside,) = doc["runs"]["with_flows"]
    assert alone["packets"] == beside["packets"] > 0
    assert alone["flow_worker_pps"] is None
    assert beside["flow_worker_pps"] > 0
    assert doc["flow_worker_pps"] == beside["flow_worker_pps"]
    assert doc["goal_met"] == (beside["flow_worker_pps"] >= doc["goal_flow_pps"])
    table = flows_beside_table(doc)
    assert "+ flow worker" in table
    assert f"{beside['flow_worker_pps']:,.0f}" in table
