"""What the lab's own attack drivers share (``python -m amlhp.lab.dnstunnel`` and the like).

A driver runs a few programs for one bounded session and must leave nothing behind when
the lab runner stops it with SIGTERM: :func:`exit_on_sigterm` turns the signal into
``SystemExit`` so that the driver's ``finally`` blocks run, and :func:`stop` ends one
child politely, then for good.
"""

from __future__ import annotations

import signal
import subprocess
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit(143)`` in the main thread: cleanup code runs."""
    signal.signal(signal.SIGTERM, _exit)


def stop(proc: subprocess.Popen[bytes] | None, timeout_s: float = 5.0) -> None:
    """SIGTERM, wait ``timeout_s``, then SIGKILL; nothing if it already ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
