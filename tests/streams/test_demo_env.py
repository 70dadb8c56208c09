"""``amlhp -X ... demo`` on the real broker: its worker and sink get every setting.

The demo's children build their settings from the environment that
:func:`amlhp.pipeline.children.child_env` hands them; each logs its effective settings
(secrets masked) at start, into the log file the demo keeps in ``<home>/var/demo``. A
``-X`` flag and an ``AMLHP_RDKAFKA_*`` variable of the parent must both show up there.
Both properties are harmless on the PLAINTEXT test broker.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amlhp.data import DEMO_CAPTURE
from amlhp.pipeline.children import SETTINGS_LOG_PREFIX, child_env
from amlhp.settings import Settings

pytestmark = pytest.mark.slow

PACKETS = 600  # enough for every stage to do real work, few enough for two shared cores


def head_of_capture(src: Path, dst: Path, packets: int) -> Path:
    """The first ``packets`` records of a classic little-endian pcap, as a new pcap."""
    data = src.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "the demo capture is a little-endian pcap"
    end = 24
    for _ in range(packets):
        (length,) = struct.unpack_from("<I", data, end + 8)
        end += 16 + length
    dst.write_bytes(data[:end])
    return dst


def logged_settings(log: Path, stage: str) -> dict[str, Any]:
    """The settings a stage logged at start (the JSON after ``effective settings of X:``)."""
    marker = f"{SETTINGS_LOG_PREFIX} of {stage}: "
    for line in log.read_text(errors="replace").splitlines():
        if marker in line:
            value = json.loads(line.split(marker, 1)[1])
            assert isinstance(value, dict)
            return value
    raise AssertionError(f"{log} has no line with {marker!r}:\n{log.read_text()[-2000:]}")


def test_x_flags_and_rdkafka_variables_reach_the_demos_worker_and_sink(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = kafka_settings.model_copy(update={"home": home})
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    env["AMLHP_RDKAFKA_STATISTICS_INTERVAL_MS"] = "600000"
    capture = head_of_capture(DEMO_CAPTURE, tmp_path / "head.pcap", PACKETS)
    args = ["-X", "socket.keepalive.enable=true", "demo", "--capture", str(capture)]
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args, "--timeout", "240"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=480, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] is True
    assert summary["packets_in"] == PACKETS
    assert Path(summary["verdict_dataset"]) == home / "out" / "verdicts"  # under the home

    for stage in ("worker", "sink"):
        got = logged_settings(home / "var" / "demo" / f"{stage}.log", stage)
        assert got["rdkafka"]["socket.keepalive.enable"] == "true", stage  # -X
        assert got["rdkafka"]["statistics.interval.ms"] == "600000", stage  # variable
        assert got["topic_raw"] == settings.topic_raw
        assert got["replication_factor"] == settings.replication_factor
        assert got["home"] == str(home)
