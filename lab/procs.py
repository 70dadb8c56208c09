"""Every process the lab starts, tracked and stopped together, also on Ctrl-C or SIGTERM.

Each child gets its own session (``start_new_session``), so that it does not receive the
terminal's Ctrl-C before the lab has decided to stop it, and so that the lab can signal
its whole process group (hydra, nmap and nginx fork helpers). Stopping is SIGTERM to the
group, a bounded wait, then SIGKILL; the exit status is always collected (no zombies).

A registry file lists the running children (pid, process group, exact command line). If
a lab run dies without cleaning up (SIGKILL, power loss), the next run or
``amlhp lab clean`` stops what is left, but only processes whose command line still is
exactly the one recorded: a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from amlhp.lab.exceptions import LabBusyError, LabError, LabInterrupted, MissingToolError
from amlhp.lab.safety import check_argv
from amlhp.lab.tools import tool_path

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0


@dataclass
class Child:
    """One started process."""

    name: str
    argv: tuple[str, ...]
    popen: subprocess.Popen[bytes]
    log_path: Path | None
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    #: started by :meth:`ProcessGroup.run`: its end is expected, never a death
    bounded: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class ProcessGroup:
    """Starts, tracks and stops the lab's processes; use as a context manager."""

    def __init__(self, registry: Path, *, stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.registry = registry
        self.stop_timeout_s = stop_timeout_s
        self._children: list[Child] = []
        self._lock = threading.RLock()  # benign traffic threads start processes too
        self._closed = False

    # -- registry -------------------------------------------------------------------
    def _save(self) -> None:
        self.registry.parent.mkdir(parents=True, exist_ok=True)
        entries = [
            {"name": c.name, "pid": c.pid, "argv": list(c.argv)}
            for c in self._children
            if c.running()
        ]
        tmp = self.registry.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        tmp.replace(self.registry)

    # -- starting -------------------------------------------------------------------
    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        stdin_pipe: bool = False,
        cwd: Path | None = None,
        bounded: bool = False,
    ) -> Child:
        """Start a long-running process (a server, a capture, a sensor) in its own session.

        ``bounded`` marks a tool run to its end (:meth:`run`): :meth:`exited` never reports it,
        since between its exit and its caller's :meth:`stop` it is ended but not dead."""
        args = tuple(str(a) for a in argv)
        check_argv(args)
        if args and "/" not in args[0]:
            args = (tool_path(args[0]), *args[1:])
        with self._lock:
            if self._closed:
                raise LabError(f"not starting {name}: the lab is shutting down")
            log_file: IO[bytes] | None = None
            if log_path is not None:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_file = log_path.open("ab")
            try:
                popen = subprocess.Popen(
                    args,
                    stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                    stdout=log_file if log_file is not None else subprocess.DEVNULL,
                    stderr=subprocess.STDOUT if log_file is not None else subprocess.DEVNULL,
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                )
            except FileNotFoundError as exc:
                if log_file is not None:
                    log_file.close()
                raise MissingToolError(
                    f"{args[0]} is not installed (run `make lab-setup`)"
                ) from exc
            child = Child(name, args, popen, log_path, log_file, bounded)
            self._children.append(child)
            self._save()
        log.debug("started %s (pid %d): %s", name, popen.pid, " ".join(args))
        return child

    def run(
        self,
        name: str,
        argv: Sequence[str],
        *,
        timeout_s: float,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> int | None:
        """Run a bounded tool to its end; past ``timeout_s`` its group is stopped.

        Returns the exit status, or None when the time limit stopped it.
        """
        child = self.start(name, argv, log_path=log_path, cwd=cwd, bounded=True)
        try:
            return child.popen.wait(timeout=max(timeout_s, 0.1))
        except subprocess.TimeoutExpired:
            log.info("%s reached its time limit (%.0f s), stopping it", name, timeout_s)
            return None
        finally:
            self.stop(child)

    # -- stopping -------------------------------------------------------------------
    def finish(self, child: Child) -> int | None:
        """Forget a child that ended (stopping it first if it still runs)."""
        return self.stop(child)

    def stop(self, child: Child, *, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop one child's process group (``sig``, a bounded wait, SIGKILL) and forget it."""
        if child.popen.stdin is not None:
            with contextlib.suppress(OSError):
                child.popen.stdin.close()
        if child.running():
            _signal_group(child.pid, sig)
            try:
                child.popen.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s (pid %d) ignored %s, killing it", child.name, child.pid, sig.name)
                _signal_group(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=self.stop_timeout_s)
        # Helpers a tool forked into its group may outlive it: make sure none is left.
        _signal_group(child.pid, signal.SIGKILL)
        if child._log_file is not None:
            child._log_file.close()
            child._log_file = None
        with self._lock:
            if child in self._children:
                self._children.remove(child)
            self._save()
        return child.popen.returncode

    def stop_all(self) -> None:
        """Stop every child, newest first; Ctrl-C and SIGTERM cannot interrupt this."""
        with _signals_ignored(), self._lock:
            self._closed = True
            for child in reversed(list(self._children)):
                self.stop(child)
            self._save()

    def running(self) -> list[Child]:
        with self._lock:
            return [c for c in self._children if c.running()]

    def exited(self) -> list[Child]:
        """Long-running children that have already ended (a server that died); a bounded
        run that just finished is not one."""
        with self._lock:
            return [c for c in self._children if not c.bounded and not c.running()]

    def __enter__(self) -> ProcessGroup:
        reap_stale(self.registry)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


LOCK_PATH = Path("/run/lock/amlhp-lab.lock")


@contextlib.contextmanager
def exclusive_lab(lock_path: Path = LOCK_PATH) -> Iterator[None]:
    """Hold the machine-wide lab lock: two runs at once would capture each other's packets
    (same addresses on the same ``lo``) and fight over the service ports."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise LabBusyError(f"another lab run holds {lock_path} (pid {holder})") from exc
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)


def reap_stale(registry: Path) -> list[int]:
    """Stop processes a dead lab run left behind (exact command line match only)."""
    try:
        entries = json.loads(registry.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable process registry %s: %s", registry, exc)
        return []
    stopped: list[int] = []
    for entry in entries:
        pid, argv = int(entry["pid"]), [str(a) for a in entry["argv"]]
        if _cmdline(pid) != argv:
            continue  # gone, or the pid now belongs to another program
        log.warning("stopping %s (pid %d) left by an earlier lab run", entry["name"], pid)
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and _cmdline(pid) == argv:
            time.sleep(0.1)
        if _cmdline(pid) == argv:
            _signal_group(pid, signal.SIGKILL)
        stopped.append(pid)
    registry.unlink(missing_ok=True)
    return stopped


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """Ignore SIGINT/SIGTERM for the duration of a cleanup (main thread only)."""
    try:
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: cannot (and need not) change handlers
        yield
        return
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_as_errors() -> Iterator[None]:
    """Turn SIGTERM, SIGHUP and Ctrl-C into :class:`LabInterrupted` inside the block.

    The exception unwinds through the ``with ProcessGroup(...)`` blocks, whose exits stop
    every child, before the CLI prints one line and exits.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        raise LabInterrupted(f"stopped by {signal.Signals(signum).name}; all lab processes ended")

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    except ValueError:  # not the main thread
        old = {}
    try:
        yield
    except KeyboardInterrupt as exc:
        raise LabInterrupted("stopped by Ctrl-C; all lab processes ended") from exc
    finally:
        for sig, handler_ in old.items():
            signal.signal(sig, handler_)
