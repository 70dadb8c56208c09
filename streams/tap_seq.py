"""A gateway's sequence numbers across tap restarts: never reused, every gap explained.

``(gateway, seq)`` is a packet's identity downstream: the sink and the alert stage drop
a row whose pair they have already stored. A restarted tap that began again at 0 would
have its new packets dropped as duplicates, so the tap keeps its position in a small
state file on the gateway (``<state dir>/<gateway>.json``), written atomically.

Writing the file for every batch would put a disk sync on the capture path, so the tap
*reserves* numbers in blocks (hi/lo allocation): before it hands out a number past the
reserved end it first records a new end ``block`` further on. A clean stop records the
exact next number. After a kill, the next run starts at the reserved end, and says which
numbers are unsure (``SeqStart.unsure``): every number below the position recorded at the
last reservation was handed out; those from there to the reserved end were handed out up
to the kill, the rest never. A seq of that range missing downstream is therefore either
one that was never used or a packet lost in the kill; a seq outside it missing downstream
is a loss of the pipeline. What a killed tap can lose is its unsent batch and the messages still
in its producer's queue (at most ``batch_size`` packets plus the queue; the tap's
``delivered_packets`` says what reached the broker).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from amlhp.streams.exceptions import TapError

#: numbers reserved per state-file write (a kill skips at most this many)
DEFAULT_BLOCK = 100_000
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class SeqStart:
    """Where a run starts and what the previous run left."""

    first: int
    #: after a killed run: ``(lo, first)``, the numbers that run may or may not have used
    unsure: tuple[int, int] | None
    #: the previous run ended cleanly (or there was none)
    clean: bool


class SeqState:
    """The reservation file of one gateway; see the module docstring."""

    def __init__(self, state_dir: Path, gateway: str, *, block: int = DEFAULT_BLOCK) -> None:
        if block < 1:
            raise TapError("the sequence block must be at least 1")
        self.path = state_dir / f"{_SAFE.sub('_', gateway)}.json"
        self.gateway = gateway
        self.block = block
        self._reserved = 0

    def _read(self) -> dict[str, int | bool | str]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise TapError(f"unreadable tap state {self.path}: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("gateway") != self.gateway:
            raise TapError(f"{self.path} is not the sequence state of gateway {self.gateway!r}")
        return raw

    def _write(self, next_seq: int, reserved: int, clean: bool) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = {"gateway": self.gateway, "next": next_seq, "reserved": reserved, "clean": clean}
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)

    def start(self, requested: int | None = None) -> SeqStart:
        """Begin a run: at ``requested`` when given (it must not go back), else where the
        previous run ended (its reserved end after a kill)."""
        state = self._read()
        clean = bool(state.get("clean", True))
        used = int(state.get("next", 0))
        reserved = int(state.get("reserved", used))
        resume = used if clean else reserved
        if requested is not None and state and requested < resume:
            raise TapError(
                f"gateway {self.gateway!r} already used sequence numbers below {resume} "
                f"({self.path}); --start-seq {requested} would reuse them"
            )
        first = resume if requested is None else requested
        unsure = None if clean or used >= first else (used, first)
        self._reserved = first
        self._write(first, first, clean=False)
        return SeqStart(first=first, unsure=unsure, clean=clean)

    def reserve(self, next_seq: int, end: int) -> None:
        """Make sure numbers below ``end`` are reserved before they are handed out."""
        if end > self._reserved:
            self._reserved = end + self.block
            self._write(next_seq, self._reserved, clean=False)

    def close(self, next_seq: int) -> None:
        """A clean stop: the next run continues at exactly ``next_seq``."""
        self._write(next_seq, next_seq, clean=True)
