"""``amlhp demo`` from a non-editable install, run from another folder, on the real broker.

The project's wheel is built and installed into a fresh virtual environment that reuses the
dependencies of this one (a path entry to its site-packages: nothing is downloaded, and the
checkout's editable finder is not loaded), so the run can only see what the wheel ships:
the bundled demo capture and default model are package data, and ``var/`` and ``out/`` are
under ``AMLHP_HOME``. The same run shows that librdkafka properties given to the parent as
``-X`` and as ``AMLHP_RDKAFKA_*`` reach the worker and the sink that the demo starts: each
stage logs its effective settings (secrets masked) when it starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pytest

from amlhp.pipeline.children import SETTINGS_LOG_PREFIX, child_env
from amlhp.settings import Settings

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip"]


@dataclass(frozen=True)
class InstalledRun:
    env_dir: Path
    home: Path
    summary: dict[str, object]
    output: str


def _install_wheel(tmp: Path) -> Path:
    """Build the wheel and install it alone into a fresh venv; returns the venv folder."""
    dist = tmp / "dist"
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        timeout=300,
        cwd=tmp,
    )
    (wheel,) = dist.glob("amlhp-*.whl")
    env_dir = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A plain path line: the dependencies, without processing the .pth files there (the
    # checkout's editable finder is one of them).
    Path(site, "project-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [*PIP, "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        timeout=300,
        cwd=tmp,
    )
    return env_dir


@pytest.fixture(scope="module")
def installed_run(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> InstalledRun:
    tmp = tmp_path_factory.mktemp("installed")
    env_dir = _install_wheel(tmp)
    home, elsewhere = tmp / "home", tmp / "elsewhere"
    elsewhere.mkdir()
    prefix = f"test.installed.{os.getpid()}"
    settings = Settings.model_validate(
        {
            "bootstrap_servers": kafka_bootstrap,
            "topic_raw": f"{prefix}.packets.raw",
            "topic_encoded": f"{prefix}.packets.encoded",
            "topic_verdicts": f"{prefix}.verdicts",
            "topic_dead_letter": f"{prefix}.deadletter",
            "topic_flow_verdicts": f"{prefix}.flows.verdicts",
            "topic_explanations": f"{prefix}.explanations",
            "consumer_group": f"{prefix}.group",
            "partitions": 2,
            "home": str(home),
        }
    )
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": "1"})
    env["AMLHP_RDKAFKA_CLIENT_RACK"] = "rack-from-env"
    proc = subprocess.run(
        [str(env_dir / "bin" / "amlhp"), "-X", "socket.keepalive.enable=true", "demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return InstalledRun(env_dir, home, summary, output)


def test_the_wheel_runs_the_demo_to_a_complete_accounting(installed_run: InstalledRun) -> None:
    summary = installed_run.summary
    assert summary["complete"] is True
    assert summary["missing"] == 0
    assert summary["duplicates"] == 0
    assert summary["packets_in"] == 25_658  # the bundled lab demo capture
    assert summary["verdicts"] + summary["dead_letters"] == summary["packets_in"]  # type: ignore[operator]
    # the bundled capture came from the installed package, the outputs went to the home
    site = installed_run.env_dir / "lib"
    assert Path(str(summary["capture"])).resolve().is_relative_to(site.resolve())
    assert Path(str(summary["verdict_dataset"])).is_relative_to(installed_run.home)
    located = subprocess.run(
        [
            str(installed_run.env_dir / "bin" / "python"),
            "-c",
            "import amlhp; print(amlhp.__file__)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=installed_run.home,
    ).stdout.strip()
    assert Path(located).resolve().is_relative_to(site.resolve()), located


@pytest.mark.parametrize("stage", ["worker", "sink"])
def test_rdkafka_flags_and_variables_reach_the_stages_the_demo_starts(
    installed_run: InstalledRun, stage: str
) -> None:
    log = installed_run.home / "var" / "demo" / f"{stage}.log"
    lines = [line for line in log.read_text().splitlines() if SETTINGS_LOG_PREFIX in line]
    assert lines, f"{log} has no '{SETTINGS_LOG_PREFIX}' line"
    logged = json.loads(lines[0].split(f"{SETTINGS_LOG_PREFIX} of {stage}: ", 1)[1])
    assert logged["rdkafka"]["socket.keepalive.enable"] == "true"  # from -X
    assert logged["rdkafka"]["client.rack"] == "rack-from-env"  # from AMLHP_RDKAFKA_*
    assert logged["topic_raw"].startswith("test.installed.")  # the parent's settings
    assert Path(logged["home"]) == installed_run.home
