"""What the lab's own attack drivers share (``python -m amlhp.lab.dnstunnel`` and the like).

A driver runs a few programs for one bounded session and must leave nothing behind when
the lab runner stops it with SIGTERM: :func:`exit_on_sigterm` turns the signal into
``SystemExit`` so that the driver's ``finally`` blocks run, and :func:`stop` ends one
child politely, then for good.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
from collections.abc import Callable
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    del frame
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """SIGTERM raises ``SystemExit(143)`` in the main thread: cleanup code runs."""
    signal.signal(signal.SIGTERM, _exit)


def driver_parser(doc: str | None, seconds: float) -> argparse.ArgumentParser:
    """A driver's parser: its docstring's first line, ``--seconds`` (the whole session at
    most) and ``--seed``; the driver adds its own options."""
    p = argparse.ArgumentParser(description=(doc or "").split("\n", 1)[0])
    p.add_argument("--seconds", type=float, default=seconds, help="whole session, at most")
    p.add_argument("--seed", type=int, default=1)
    return p


def c2_parser(
    doc: str | None,
    seconds: float,
    peer: str,
    port: int,
    count: tuple[str, int],
    pace: tuple[str, float, str],
) -> argparse.ArgumentParser:
    """A command-and-control driver's parser: :func:`driver_parser` plus the attacker's
    side (``--<peer>`` address and ``--port``), the ``--implant`` device, how many
    exchanges (``count``: option and default) and their timing (``pace``: option, default,
    help)."""
    p = driver_parser(doc, seconds)
    p.add_argument(f"--{peer}", required=True)
    p.add_argument("--port", type=int, default=port)
    p.add_argument("--implant", required=True)
    p.add_argument(count[0], type=int, default=count[1])
    p.add_argument(pace[0], type=float, default=pace[1], help=pace[2])
    return p


def run_driver(
    p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int], argv: list[str] | None
) -> int:
    """Parse, make SIGTERM clean up (:func:`exit_on_sigterm`), run the session."""
    args = p.parse_args(argv)
    exit_on_sigterm()
    return run(args)


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
