"""Background server processes we start ourselves, tracked by pid files.

A pid file alone is not trusted: the pid may have been reused after a reboot, so a process
only counts as ours when its command line still contains a marker we chose (the path of
its config file). Stopping is SIGTERM (the servers shut down cleanly on it), a bounded
wait, then SIGKILL.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from amlhp.infra.exceptions import InfraError

StatusCallback = Callable[[str], None]

# Popen objects of the servers this process started: kept so that they are not garbage
# collected while running (a ResourceWarning) and so that their exit status is collected.
_children: dict[int, tuple[subprocess.Popen[bytes], str]] = {}


def ignore_status(_: str) -> None:
    """The default status callback: library callers that show no status line."""


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def alive(pid: int, marker: str) -> bool:
    """True when ``pid`` runs and its command line contains ``marker``."""
    child = _children.get(pid)
    if child is not None:
        # Our own child: trust Popen (just after exec, /proc/<pid>/cmdline reads empty).
        proc, cmdline = child
        if proc.poll() is None:
            return marker in cmdline
        del _children[pid]  # exited and now reaped
        return False
    cmd = _cmdline(pid)
    return cmd is not None and marker in cmd and not _is_zombie(pid)


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid recorded in ``pid_file`` if that process is still ours, else ``None``."""
    pid = read_pid(pid_file)
    return pid if pid is not None and alive(pid, marker) else None


def spawn(cmd: Sequence[str], *, log_file: Path, pid_file: Path, cwd: Path) -> int:
    """Start ``cmd`` detached (own session, so Ctrl-C in our terminal does not reach it)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _children[proc.pid] = (proc, " ".join(cmd))
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def wait_gone(pids: Sequence[int], marker_of: Callable[[int], str], timeout: float) -> list[int]:
    """Wait until the processes exit; return those still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        left = [pid for pid in left if alive(pid, marker_of(pid))]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return left


def signal_pid(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise InfraError(f"not allowed to signal pid {pid}: {exc}") from exc


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(log_file: Path, lines: int = 15) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.strip().splitlines()[-lines:])


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed): serialises ``up``/``down``
    of one layout between processes, e.g. two test sessions in the same checkout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
