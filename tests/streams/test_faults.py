"""Faults on the real broker, the ledger checked exactly at the end (issue 17's scenarios).

A worker SIGKILLed mid-run republishes what it had published after its last commit; the
sink drops those rows by (gateway, seq), so the dataset holds every packet once. The
recovery time (kill -> the dataset's highest seq moves again) is printed for the record,
not asserted: speed goals live in benchmarks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest

from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings

from .conftest import StageStarter, settings_env
from .test_pipeline import finish, ready

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

RATE, SECONDS = 1500, 30
KILLS_AT_S = (6.0, 13.0, 20.0)


def _highest_seq(out: Path) -> int:
    table = read_verdicts(out)
    return int(pc.max(table.column("seq")).as_py()) if table.num_rows else -1


def test_worker_sigkilled_three_times_loses_nothing_and_duplicates_nothing(
    pipeline_settings: Settings, stages: StageStarter, demo_capture: Path, tmp_path: Path
) -> None:
    settings = pipeline_settings
    out = tmp_path / "verdicts"
    worker = stages("worker-0", "worker")
    sink = stages("sink", "sink", "--out", str(out), "--roll-seconds", "0.5")
    ready(settings, [worker, sink])
    tap = subprocess.Popen(
        [sys.executable, "-m", "amlhp.cli", "tap", str(demo_capture), "--gateway", "gw-f",
         "--rate", str(RATE), "--duration", str(SECONDS)],
        env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started = time.monotonic()
    recoveries = []
    for i, at in enumerate(KILLS_AT_S, start=1):
        time.sleep(max(0.0, started + at - time.monotonic()))
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(10)
        killed = time.monotonic()
        worker = stages(f"worker-{i}", "worker")  # replaced at once
        time.sleep(1.5)  # the sink stores what the killed worker had published
        before = _highest_seq(out)
        while _highest_seq(out) <= before and time.monotonic() - killed < 60:
            time.sleep(0.25)
        recoveries.append(round(time.monotonic() - killed, 1))
    assert tap.wait(timeout=120) == 0
    ledger = finish(settings, out, {"gw-f": (0, RATE * SECONDS)}, [worker, sink])
    assert ledger.verdict_rows == ledger.verdicts, "the dataset holds a packet twice"
    print(f"recovery after each SIGKILL (s): {recoveries}")
