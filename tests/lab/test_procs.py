"""The lab's process handling: groups stopped whole, time limits, Ctrl-C, leftovers, lock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from amlhp.lab.exceptions import LabBusyError, UnsafeTargetError
from amlhp.lab.procs import ProcessGroup, exclusive_lab, reap_stale

from .conftest import default_sigint


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_all_ends_a_child_and_the_helpers_it_forked(tmp_path: Path) -> None:
    pids_file = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids_file}; sleep 300"
    with ProcessGroup(tmp_path / "registry.json") as group:
        child = group.start("forker", ["sh", "-c", script])
        assert wait_for(lambda: pids_file.exists() and pids_file.read_text().strip() != "")
        grandchild = int(pids_file.read_text())
        assert alive(child.pid)
        assert alive(grandchild)
        registry = json.loads((tmp_path / "registry.json").read_text())
        assert [e["pid"] for e in registry] == [child.pid]
    assert not alive(child.pid)
    assert wait_for(lambda: not alive(grandchild))
    assert json.loads((tmp_path / "registry.json").read_text()) == []


def test_a_bounded_run_that_ends_is_not_a_dead_server(tmp_path: Path) -> None:
    """A run's child, ended but not yet forgotten by its thread, is not reported as died."""
    with ProcessGroup(tmp_path / "registry.json") as group:
        server = group.start("server", ["sh", "-c", "exit 3"])
        # a bounded run whose caller is slow to collect it: hold it between exit and stop
        bounded = group.start("client", ["true"], bounded=True)
        assert wait_for(lambda: not server.running() and not bounded.running())
        assert [c.name for c in group.exited()] == ["server"]
        group.stop(bounded)
        group.stop(server)
        assert group.exited() == []


def test_a_tool_past_its_time_limit_is_stopped(tmp_path: Path) -> None:
    with ProcessGroup(tmp_path / "registry.json") as group:
        started = time.monotonic()
        assert group.run("sleeper", ["sleep", "60"], timeout_s=0.5) is None
        assert time.monotonic() - started < 10
        assert group.run("quick", ["true"], timeout_s=5) == 0
        assert group.running() == []


def test_a_command_naming_an_outside_address_never_starts(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with ProcessGroup(tmp_path / "registry.json") as group, pytest.raises(UnsafeTargetError):
        group.start("bad", ["sh", "-c", f"touch {marker}", "10.1.2.3"])
    assert not marker.exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_stop_every_child_before_exit(tmp_path: Path, sig: int) -> None:
    pid_file = tmp_path / "child.pid"
    program = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from amlhp.lab.procs import ProcessGroup, interrupts_as_errors
        from amlhp.lab.exceptions import LabInterrupted
        try:
            with interrupts_as_errors(), ProcessGroup(Path({str(tmp_path)!r}) / "r.json") as g:
                child = g.start("sleeper", ["sleep", "300"])
                Path({str(pid_file)!r}).write_text(str(child.pid))
                time.sleep(60)
        except LabInterrupted as exc:
            print("interrupted:", exc)
            raise SystemExit(2)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    try:
        assert wait_for(lambda: pid_file.exists() and pid_file.read_text() != "", timeout=30)
        sleeper = int(pid_file.read_text())
        assert alive(sleeper)
        os.kill(proc.pid, sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    assert "interrupted" in out
    assert wait_for(lambda: not alive(sleeper))


def test_leftovers_of_a_killed_run_are_stopped_but_not_strangers(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    orphan = subprocess.Popen(["sleep", "301"], start_new_session=True)
    stranger = subprocess.Popen(["sleep", "302"], start_new_session=True)
    try:
        registry.write_text(
            json.dumps(
                [
                    {"name": "orphan", "pid": orphan.pid, "argv": ["sleep", "301"]},
                    # a recycled pid: the recorded command line is not what runs there
                    {"name": "recycled", "pid": stranger.pid, "argv": ["tcpdump", "-i", "lo"]},
                ]
            )
        )
        assert wait_for(lambda: Path(f"/proc/{orphan.pid}/cmdline").read_bytes() != b"")
        assert reap_stale(registry) == [orphan.pid]
        assert orphan.wait(timeout=10) is not None
        assert stranger.poll() is None
        assert not registry.exists()
    finally:
        for p in (orphan, stranger):
            p.kill()
            p.wait()


def test_only_one_lab_run_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "lab.lock"
    with exclusive_lab(lock):
        assert lock.read_text() == str(os.getpid())
        with pytest.raises(LabBusyError, match=str(os.getpid())), exclusive_lab(lock):
            pass  # pragma: no cover - never entered
    with exclusive_lab(lock):  # released: can be taken again
        pass
