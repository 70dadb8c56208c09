"""tcpdump on ``lo``, limited by a BPF filter to the lab's own addresses; merging captures.

One capture per scenario (plus one per extra interface of a scenario that makes its own
network namespace, merged into the scenario's file by time). tcpdump writes packet by
packet (``-U``) so that the lab can count the capture while it grows; it is stopped with
SIGINT, which makes it flush and print its statistics (packets dropped by the kernel are
recorded in the manifest).
"""

from __future__ import annotations

import heapq
import re
import signal
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from amlhp.lab.exceptions import LabError
from amlhp.lab.procs import Child, ProcessGroup

INTERFACE = "lo"
_HEADER = 24  # bytes of a classic pcap file header


def _records(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """``(ts_key, order, raw record)`` of a classic pcap (little-endian, as tcpdump writes)."""
    data = path.read_bytes()
    pos = _HEADER
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII")
    order = 0
    while pos + 16 <= len(data):
        sec, frac, incl, _ = rec.unpack_from(data, pos)
        end = pos + 16 + incl
        if end > len(data):
            break
        yield (sec * 1_000_000_000 + frac, order, data[pos:end])
        order += 1
        pos = end


def merge_files(files: list[Path], out: Path, *, snaplen: int | None = None) -> int:
    """Write ``files`` merged by time into ``out``; all must share one pcap header.

    With ``snaplen``, each packet keeps at most its first ``snaplen`` bytes (its wire length
    stays in the record, as tcpdump ``-s`` writes it): enough for every header and the
    payload bytes the model reads, without the bulk of large transfers.
    """
    if not files:
        raise LabError("nothing to merge")
    headers = {f.read_bytes()[:_HEADER] for f in files}
    if len(headers) != 1:
        raise LabError("captures differ in format (magic, link type or snap length)")
    header = headers.pop()
    endian = "<" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    rec = struct.Struct(endian + "IIII")
    if snaplen is not None:
        if snaplen < 64:
            raise LabError("a snap length below 64 bytes would cut packet headers")
        header = header[:16] + struct.pack(endian + "I", snaplen) + header[20:]
    out.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with out.open("wb") as fh:
        fh.write(header)
        streams = [
            ((key, index, order, raw) for key, order, raw in _records(f))
            for index, f in enumerate(files)
        ]
        for _, _, _, raw in heapq.merge(*streams):
            if snaplen is not None and len(raw) - 16 > snaplen:
                sec, frac, _, wire = rec.unpack_from(raw)
                raw = rec.pack(sec, frac, snaplen, wire) + raw[16 : 16 + snaplen]
            fh.write(raw)
            count += 1
    return count


_STATS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass(frozen=True)
class CaptureStats:
    captured: int | None
    received: int | None
    dropped: int | None


class Capture:
    """A running tcpdump writing ``path``."""

    def __init__(
        self, group: ProcessGroup, path: Path, bpf: str, log_path: Path, interface: str = INTERFACE
    ) -> None:
        self.group = group
        self.interface = interface
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
            self.interface,
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
