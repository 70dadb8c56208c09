"""Short real lab runs for the lab tests, and the child processes those tests start.

Every lab test module that needs captures makes one run of a few scenarios: the same work
dir setup, the same skip when another lab run holds the machine. One helper does it, so
that a module states only what it runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import dpkt
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


def lab_workdir_for(name: str) -> Path:
    """``WORK_ROOT/name``, made and readable by the servers once they drop root."""
    path = WORK_ROOT / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    return path


def run_lab(out: Path, name: str, *, attempts: int = 1, **options: Any) -> dict[str, Any]:
    """One real lab run into ``out`` (work dir ``WORK_ROOT/name``); its manifest.

    ``options`` are the other :class:`~amlhp.lab.runner.RunOptions`. The test is skipped
    when another lab run still holds the machine after ``attempts`` tries, 30 s apart.
    """
    from amlhp.lab.runner import LabRun, RunOptions

    run_options = RunOptions(out=out, workdir=lab_workdir_for(name), **options)
    for attempt in range(1, attempts + 1):
        try:
            return LabRun(run_options).run()
        except LabBusyError as exc:
            if attempt == attempts:
                pytest.skip(f"another lab run is in progress: {exc}")
            time.sleep(30)
    raise AssertionError("attempts must be at least 1")


def attacks_alone(
    out: Path, name: str, scenarios: tuple[str, ...], packets: int, command: str, attempts: int = 1
) -> dict[str, Any]:
    """:func:`run_lab` of attack scenarios without benign background, 15 s each at most.

    What the attack modules check is the attack's own packets, so their runs leave the
    benign devices out and keep each scenario short; seed 5 for all of them.
    """
    return run_lab(
        out,
        name,
        attempts=attempts,
        scenarios=scenarios,
        packets=packets,
        time_limit_s=15,
        background=False,
        seed=5,
        command=command,
    )


@dataclass(frozen=True)
class Segment:
    """One TCP or UDP packet of a lab capture, as the tests look at it."""

    ts: float
    src: IPv4Address
    dst: IPv4Address
    proto: str  # "tcp" or "udp"
    sport: int
    dport: int
    flags: int  # TCP flags; 0 for UDP
    payload: bytes


def segments(path: Path) -> Iterator[Segment]:
    """The TCP and UDP packets of a capture (the lab captures on ``lo``: Ethernet frames)."""
    with path.open("rb") as fh:
        for ts, frame in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(frame).data
            if not isinstance(ip, dpkt.ip.IP):
                continue
            l4 = ip.data
            if isinstance(l4, dpkt.tcp.TCP | dpkt.udp.UDP):
                tcp = isinstance(l4, dpkt.tcp.TCP)
                yield Segment(
                    float(ts),
                    IPv4Address(ip.src),
                    IPv4Address(ip.dst),
                    "tcp" if tcp else "udp",
                    l4.sport,
                    l4.dport,
                    l4.flags if tcp else 0,
                    bytes(l4.data),
                )


@contextlib.contextmanager
def reaped(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """Kill and reap ``proc`` on the way out where the test left it running (an assert failed)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
