"""Fixtures of the lab tests: one short real lab run shared by the module that needs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.lab import WORK_ROOT, lab_workdir_for, require_lab, run_lab


@pytest.fixture
def lab_workdir(request: pytest.FixtureRequest) -> Path:
    return lab_workdir_for(request.node.name.replace("[", "-").replace("]", ""))


@pytest.fixture(scope="module")
def ci_lab_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """``amlhp lab run --profile ci``: every scenario, a few hundred packets each."""
    require_lab()
    out = tmp_path_factory.mktemp("lab-ci")
    manifest = run_lab(out, "ci-run", profile="ci", seed=3, command="pytest ci run")
    return out, WORK_ROOT / "ci-run", manifest


def default_sigint() -> None:
    """``preexec_fn``: give a child the default SIGINT disposition before it execs.

    A shell without job control starts background commands with SIGINT ignored, and a
    child inherits that: Python then installs no KeyboardInterrupt handler, so a test that
    sends Ctrl-C would depend on how pytest itself was started.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
