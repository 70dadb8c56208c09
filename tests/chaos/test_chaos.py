"""The fault suite's short version on the real broker: every scenario of ``amlhp chaos``,
each with the ledger checked exactly (no packet missing, no dataset row twice).

Recovery times are printed for the record, not asserted: speed goals live in benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amlhp.chaos.run import Load, run_scenario
from amlhp.chaos.scenarios import SCENARIOS
from amlhp.data import DEMO_CAPTURE
from amlhp.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SHORT = Load(rate=1000, seconds=20.0)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_keeps_the_dataset_exact(
    name: str, kafka_settings: Settings, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    settings = kafka_settings.model_copy(update={"partitions": 4})
    result = run_scenario(
        name,
        scenario.faults,
        settings,
        tmp_path,
        SHORT,
        DEMO_CAPTURE,
        workers=scenario.workers,
        keep=True,
    )
    print(f"{name}: {result.as_dict()}")
    assert result.error is None, result.error
    assert result.missing == 0, result.as_dict()
    assert result.duplicate_rows == 0, result.as_dict()
    assert result.verdicts + result.dead == SHORT.packets
    assert result.passed
    if name in ("worker-sigkill", "sink-sigkill", "zombie-worker"):
        # each fault was followed by new verdicts in the dataset (nothing stalled)
        assert result.recovery_s
        assert all(s < 90 for s in result.recovery_s), result.recovery_s
