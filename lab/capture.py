"""tcpdump on ``lo``, limited by a BPF filter to the lab's own addresses.

One capture per scenario. tcpdump writes packet by packet (``-U``) so that the lab can
count the capture while it grows; it is stopped with SIGINT, which makes it flush and
print its statistics (packets dropped by the kernel are recorded in the manifest).
"""

from __future__ import annotations

import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from amlhp.lab.exceptions import LabError
from amlhp.lab.procs import Child, ProcessGroup

INTERFACE = "lo"
_STATS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass(frozen=True)
class CaptureStats:
    captured: int | None
    received: int | None
    dropped: int | None


class Capture:
    """A running tcpdump writing ``path``."""

    def __init__(self, group: ProcessGroup, path: Path, bpf: str, log_path: Path) -> None:
        self.group = group
        self.path = path
        self.bpf = bpf
        self.log_path = log_path
        self.child: Child | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        argv = [
            "tcpdump",
            "-i",
            INTERFACE,
            "-n",
            "-U",
            "--immediate-mode",  # hand each packet over at once (live counts)
            "-Z",
            "root",  # write into the root-owned output folder
            "-w",
            str(self.path),
            self.bpf,
        ]
        self.child = self.group.start(f"tcpdump-{self.path.stem}", argv, log_path=self.log_path)
        deadline = time.monotonic() + timeout_s
        while "listening on" not in self._log():
            if not self.child.running():
                raise LabError(f"tcpdump ended at start: {self._log().strip()[-300:]}")
            if time.monotonic() > deadline:
                raise LabError("tcpdump did not start listening in time")
            time.sleep(0.05)

    def _log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> CaptureStats:
        if self.child is None:
            raise LabError("capture not started")
        self.group.stop(self.child, sig=signal.SIGINT)
        values: dict[str, int] = {}
        for number, what in _STATS.findall(self._log()):
            values[what] = int(number)
        return CaptureStats(
            captured=values.get("captured"),
            received=values.get("received by filter"),
            dropped=values.get("dropped by kernel"),
        )
