"""Pid-file tracking: a process counts as ours only while it runs with our marker."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from amlhp.infra import process


def test_spawned_process_is_tracked_then_stopped(tmp_path: Path) -> None:
    marker = str(tmp_path / "marker-arg")
    pid_file = tmp_path / "p.pid"
    cmd = [sys.executable, "-c", "import time, sys; time.sleep(60)", marker]
    pid = process.spawn(cmd, log_file=tmp_path / "log", pid_file=pid_file, cwd=tmp_path)
    assert process.read_pid(pid_file) == pid
    assert process.running_pid(pid_file, marker) == pid
    assert process.running_pid(pid_file, marker + "-other") is None
    process.signal_pid(pid, signal.SIGTERM)
    assert process.wait_gone([pid], lambda _: marker, 10.0) == []
    assert process.running_pid(pid_file, marker) is None


def test_stale_or_garbage_pid_files_are_not_running(tmp_path: Path) -> None:
    pid_file = tmp_path / "p.pid"
    assert process.running_pid(pid_file, "x") is None
    pid_file.write_text("not a pid\n")
    assert process.running_pid(pid_file, "x") is None
    pid_file.write_text("1\n")  # init runs, but it is not ours
    assert process.running_pid(pid_file, str(tmp_path)) is None


def test_port_open_sees_a_listener() -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert process.port_open("127.0.0.1", port)
    assert not process.port_open("127.0.0.1", port)
