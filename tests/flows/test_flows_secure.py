"""The flow worker and flow sink on the secured broker as the flows principal: the Faust
app (aiokafka) logs in with SCRAM over TLS, creates its changelog under its ACL prefix,
and the flow verdicts reach the dataset. The packet pipeline's secured test is
``tests/streams/test_secure_pipeline.py`` (in ``make test``; this one is long only to keep
``make test`` within its budget: the Faust client it exercises is the worker's and the
alert stage's, which that test covers)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.infra.kafka_config import principal_settings
from amlhp.pipeline.children import amlhp_command, child_env, start_stage
from amlhp.settings import Settings
from tests.support.kafka import KafkaHandle

pytestmark = [pytest.mark.slow, pytest.mark.long]


def test_flow_worker_and_sink_as_the_flows_principal(
    secure_admin: Settings, kafka_secure: KafkaHandle, tmp_path: Path
) -> None:
    def env(principal: str) -> dict[str, str]:
        settings = principal_settings(secure_admin, kafka_secure.layout, principal)
        return child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})

    out = tmp_path / "flows"
    procs = [
        start_stage("flows", ["flows", "worker", "--metrics-port", "-1", "--idle-close", "2"],
                    tmp_path / "logs", env("flows")),
        start_stage("flow-sink", ["flows", "sink", "-o", str(out), "--roll-seconds", "1",
                                  "--metrics-port", "-1"], tmp_path / "logs", env("flows")),
    ]  # fmt: skip
    try:
        tap = subprocess.run(
            [*amlhp_command(), "tap", "-g", "gw-1", "--keep-timestamps", str(DEMO_CAPTURE)],
            env=env("tap"), capture_output=True, timeout=300,
        )  # fmt: skip
        assert tap.returncode == 0, tap.stderr.decode()[-2000:]
        deadline, rows = time.monotonic() + 240, 0
        while time.monotonic() < deadline and rows < 1000:
            for proc in procs:
                proc.check_alive()
            files = list(out.rglob("*.parquet")) if out.exists() else []
            rows = ds.dataset(files, format="parquet").count_rows() if files else 0
            time.sleep(1)
        assert rows >= 1000, f"only {rows} flow verdicts reached the dataset"
    finally:
        for proc in procs:
            proc.stop(timeout_s=20)
    log = (tmp_path / "logs" / "flows.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert "AUTHORIZATION_FAILED" not in log
