"""`amlhp infra ...` through the real console entry point (exit codes, machine-readable stdout)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from amlhp.infra.paths import default_paths


def _amlhp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_kafka_status_lists_every_layout_and_exits_1_when_none_runs() -> None:
    proc = _amlhp("infra", "kafka", "status", "--json")
    rows = json.loads(proc.stdout)
    assert [(r["layout"], r["node_id"], r["port"]) for r in rows] == [
        ("single", 1, 9092),
        ("cluster", 1, 19092),
        ("cluster", 2, 19093),
        ("cluster", 3, 19094),
        ("single-secure", 1, 9392),
        ("cluster-secure", 1, 39092),
        ("cluster-secure", 2, 39093),
        ("cluster-secure", 3, 39094),
    ]
    assert {r["state"] for r in rows} <= {"running", "starting", "foreign", "stopped"}
    any_up = any(r["state"] in {"running", "foreign"} for r in rows)
    assert proc.returncode == (0 if any_up else 1), proc.stderr


def test_fetch_prints_the_class_path_folder() -> None:
    proc = _amlhp("infra", "fetch", "--no-prometheus")
    assert proc.returncode == 0, proc.stderr
    libs = Path(proc.stdout.strip())
    assert libs == default_paths().kafka_libs()
    assert any(libs.glob("kafka_2.13-*.jar"))
    assert "jars" in proc.stderr  # the human-readable summary goes to stderr


def test_bad_rdkafka_flag_is_a_one_line_error_with_exit_2() -> None:
    proc = _amlhp("-X", "no-equals-sign", "infra", "kafka", "status")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: -X expects name=value, got 'no-equals-sign'"
    assert proc.stdout == ""
