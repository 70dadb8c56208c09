"""Fixed-rate pacing for the tap: a token bucket released in small chunks.

Benchmarks offer the pipeline a known load (packets per second) for a known time. Sleeping
once per packet is too coarse and too costly at tens of thousands of packets per second, so
the pacer releases ``chunk`` packets at a time, each chunk when its tokens are due:
chunk ``k`` (packets ``k*chunk`` onwards) is due ``k*chunk / rate`` seconds after the start.
A tap that falls behind catches up by releasing due chunks at once, but never more than
``burst_s`` seconds' worth: beyond that the schedule slides (the bucket is full), and the
packets it could not offer in time are offered later, so the offered rate drops instead of
arriving as one huge burst. The clock and the sleep are injectable so the schedule is
tested without sleeping.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: seconds of packets released per chunk: 10 ms keeps sleeps few and bursts small
DEFAULT_STEP_S = 0.01


def chunk_for(rate: float, step_s: float = DEFAULT_STEP_S) -> int:
    """Packets per chunk for ``rate`` packets/s: one step's worth, at least 1."""
    if rate <= 0:
        raise ValueError("rate must be > 0 packets per second")
    return max(1, math.ceil(rate * step_s))


def total_packets(rate: float, duration_s: float) -> int:
    """How many packets a run of ``duration_s`` seconds at ``rate`` offers (exact count)."""
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be > 0")
    return max(1, round(rate * duration_s))


@dataclass
class RatePacer:
    """Releases packets at ``rate`` per second in chunks (see the module docstring)."""

    rate: float
    chunk: int = 0
    burst_s: float = 0.5
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    slid_s: float = 0.0  # how far the schedule slid because the tap fell behind
    _origin: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be > 0 packets per second")
        if self.chunk <= 0:
            self.chunk = chunk_for(self.rate)
        if self.burst_s < 0:
            raise ValueError("burst_s must be >= 0")

    def due(self, sent: int) -> float:
        """Seconds after the start at which packet number ``sent`` may go out."""
        return (sent // self.chunk) * self.chunk / self.rate

    def schedule(self, total: int) -> list[tuple[float, int]]:
        """(due offset in seconds, packets) of every chunk of a ``total``-packet run."""
        return [
            (self.due(first), min(self.chunk, total - first))
            for first in range(0, total, self.chunk)
        ]

    def wait(self, sent: int) -> float:
        """Block until packet number ``sent`` is due; returns the seconds slept.

        Call it before each packet; only the first packet of a chunk can sleep.
        """
        now = self.clock()
        if self._origin is None:
            self._origin = now
        if sent % self.chunk:
            return 0.0
        target = self._origin + self.slid_s + self.due(sent)
        delay = target - now
        if delay > 0:
            self.sleep(delay)
            return delay
        if -delay > self.burst_s:
            # Too far behind: slide the schedule so that at most burst_s is caught up.
            self.slid_s += -delay - self.burst_s
        return 0.0
