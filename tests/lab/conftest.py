"""Fixtures of the lab tests: one short real lab run shared by the module that needs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from amlhp.lab.exceptions import LabBusyError
from amlhp.lab.tools import missing_tools

REPO_ROOT = Path(__file__).resolve().parents[2]
#: the servers drop privileges and must read their configs: not under pytest's 0700 tmp
WORK_ROOT = REPO_ROOT / "var" / "lab" / "pytest"


def require_lab() -> None:
    """Skip (with the reason) where the lab cannot run: not root, or programs missing."""
    if os.geteuid() != 0:
        pytest.skip("the attack lab needs root (tcpdump, raw sockets)")
    missing = missing_tools()
    if missing:
        pytest.skip(f"lab programs missing: {', '.join(missing)} (run `make lab-setup`)")


@pytest.fixture
def lab_workdir(request: pytest.FixtureRequest) -> Path:
    path = WORK_ROOT / request.node.name.replace("[", "-").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def ci_lab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """``amlhp lab run --profile ci``: every scenario, a few hundred packets each."""
    require_lab()
    from amlhp.lab.runner import LabRun, RunOptions

    out = tmp_path_factory.mktemp("lab-ci")
    workdir = WORK_ROOT / "ci-run"
    workdir.mkdir(parents=True, exist_ok=True)
    options = RunOptions(out=out, workdir=workdir, profile="ci", seed=3, command="pytest ci run")
    try:
        manifest = LabRun(options).run()
    except LabBusyError as exc:
        pytest.skip(f"another lab run is in progress: {exc}")
    return out, workdir, manifest


def default_sigint() -> None:
    """``preexec_fn``: give a child the default SIGINT disposition before it execs.

    A shell without job control starts background commands with SIGINT ignored, and a
    child inherits that: Python then installs no KeyboardInterrupt handler, so a test that
    sends Ctrl-C would depend on how pytest itself was started.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
