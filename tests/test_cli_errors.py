"""What a newcomer's mistakes get from the real ``amlhp`` command: a short error, exit 2, no
traceback; help that works whatever the environment holds; warnings for what would
otherwise pass silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AMLHP = str(Path(sys.executable).with_name("amlhp"))


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> tuple[int, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AMLHP_")}
    environ.update(env or {})
    out = subprocess.run(
        [AMLHP, *args], capture_output=True, text=True, env=environ, timeout=timeout, check=False
    )
    return out.returncode, out.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["score"], {}, "Missing argument"),
        (["scroe", "x.pcap"], {}, "Did you mean 'score'?"),
        (["score", "x.pcap", "--outt", "y"], {}, "No such option: --outt"),
        (["report", "ds", "--since", "garbage"], {}, "Invalid value for '--since'"),
        (["-X", "foo.bar=baz", "topics", "list"], {}, 'No such configuration property: "foo.bar"'),
        (["topics", "list"], {"AMLHP_ALERT_MIN_SCORE": "abc"}, "AMLHP_ALERT_MIN_SCORE"),
        (["--partitions", "0", "topics", "list"], {}, "--partitions"),
        (["devices", "--flow-verdicts", "no/such/dir"], {}, "no flow verdicts at no/such/dir"),
        (["devices", "--flow-verdicts", "pyproject.toml"], {}, "is not flow verdicts in Parquet"),
    ],
    ids=[
        "missing-argument",
        "unknown-command",
        "unknown-option",
        "bad-value",
        "unknown-rdkafka-property",
        "bad-environment-value",
        "bad-flag-value",
        "no-flow-verdicts",
        "not-flow-verdicts",
    ],
)
def test_a_usage_error_is_one_short_message_and_exit_2(
    args: list[str], env: dict[str, str], says: str
) -> None:
    code, stderr = _run(*args, env=env)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 3, stderr
    assert says in stderr


def test_an_unreachable_broker_is_one_message_within_15_s() -> None:
    """Port 1 on loopback refuses at once: librdkafka would retry and log every failure."""
    code, stderr = _run("-b", "127.0.0.1:1", "topics", "list", timeout=15.0)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 3, stderr
    assert "no Kafka broker answered" in stderr
    assert "FAIL" not in stderr


@pytest.mark.parametrize("args", [["--help"], ["topics", "--help"], ["alerts", "--help"]])
def test_help_works_whatever_the_environment_holds(args: list[str]) -> None:
    code, stderr = _run(*args, env={"AMLHP_ALERT_MIN_SCORE": "abc", "AMLHP_PARTITIONS": "x"})
    assert code == 0, stderr
    assert stderr == ""


def test_a_misspelt_variable_and_a_missing_home_are_warned_about(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    env = {"AMLHP_PARTITONS": "3", "AMLHP_HOME": str(home), "AMLHP_TEST_ANYTHING": "1"}
    code, stderr = _run("-b", "127.0.0.1:1", "topics", "list", env=env, timeout=15.0)
    assert code == 2
    assert "unknown environment variable AMLHP_PARTITONS (did you mean AMLHP_PARTITIONS?)" in (
        stderr
    )
    assert "AMLHP_TEST_ANYTHING" not in stderr  # the test suite's own variables
    assert f"AMLHP_HOME {home} does not exist" in stderr
