"""The fault suite's short version on the real broker: every scenario of ``amlhp chaos``,
each with the ledger checked exactly (no packet missing, no dataset row twice).

Recovery times are printed for the record, not asserted: speed goals live in benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from amlhp.chaos.run import Load, ScenarioResult, run_scenario
from amlhp.chaos.scenarios import SCENARIOS
from amlhp.data import DEMO_CAPTURE
from amlhp.infra.kafka_config import KafkaLayout
from amlhp.settings import Settings
from tests.support.kafka import KafkaHandle

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

SHORT = Load(rate=1000, seconds=15.0)
#: the smallest session timeout brokers accept by default: recoveries (and the suite in
#: `make test`) take 4 s less per kill than with the 10 s default, and nothing else changes
SESSION_TIMEOUT_S = 6.0
#: faults after which new verdicts must reach the dataset while the tap still runs
MEASURED = {"worker-sigkill", "sink-sigkill", "zombie-worker", "broker-restart", "disk-full"}


def _run(
    name: str, settings: Settings, tmp_path: Path, load: Load, broker: KafkaLayout | None = None
) -> ScenarioResult:
    scenario = SCENARIOS[name]
    load = scenario.load_for(load)
    result = run_scenario(
        name,
        scenario.faults,
        settings.model_copy(update={"partitions": 4, "session_timeout_s": SESSION_TIMEOUT_S}),
        tmp_path,
        load,
        DEMO_CAPTURE,
        workers=scenario.workers,
        keep=True,
        broker=broker,
        prepare=scenario.prepare,
        alerts=scenario.alerts,
        flows=scenario.flows,
    )
    print(f"{name}: {result.as_dict()}")
    if result.skipped is not None:
        pytest.skip(result.skipped)
    assert result.error is None, result.error
    assert result.missing == 0, result.as_dict()
    assert result.duplicate_rows == 0, result.as_dict()
    assert result.verdicts + result.dead == load.packets
    assert result.passed
    if name in MEASURED:
        # each fault was followed by new verdicts in the dataset (nothing stalled)
        assert result.recovery_s
        assert all(s < 90 for s in result.recovery_s), result.recovery_s
    return result


#: scenarios run by `make test-long` only, to keep `make test` within its 30 minutes: the
#: alert stage's SIGKILLs (and SIGTERMs) mid-backlog, with exact incidents, are
#: tests/streams/test_alert_stage.py's, in `make test`
LONG_SCENARIOS = frozenset({"alerts-sigkill"})


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.long) if n in LONG_SCENARIOS else n
        for n in sorted(n for n, s in SCENARIOS.items() if s.brokers <= 1)
    ],
)
def test_scenario_keeps_the_dataset_exact(
    name: str,
    kafka_settings: Settings,
    kafka_broker_handle: KafkaHandle,
    tmp_path: Path,
) -> None:
    broker = None
    if SCENARIOS[name].brokers:
        if kafka_broker_handle.external:
            pytest.skip("the broker on 9092 is not one amlhp started: it is not ours to kill")
        broker = kafka_broker_handle.layout
    _run(name, kafka_settings, tmp_path, SHORT, broker)


@pytest.mark.cluster
@pytest.mark.long  # 50-80 s of the 30 min make test allows: `make test-long`
def test_cluster_broker_kills_keep_the_dataset_exact(
    kafka_settings: Settings, kafka_cluster: KafkaHandle, tmp_path: Path
) -> None:
    if kafka_cluster.external:
        pytest.skip("the cluster on 19092-19094 is not one amlhp started: not ours to kill")
    layout = kafka_cluster.layout
    settings = kafka_settings.model_copy(
        update={
            "bootstrap_servers": layout.bootstrap_servers,
            "replication_factor": layout.replication_factor,
        }
    )
    result = _run("cluster-brokers", settings, tmp_path, SHORT, layout)
    assert len(result.recovery_s) == 2  # the leaders' broker, then another one
