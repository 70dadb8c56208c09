"""Fixed-rate pacing of the tap: the schedule it computes, on a clock the test moves."""

from __future__ import annotations

import threading

import pytest

from amlhp.streams.pacing import RatePacer, chunk_for, total_packets
from amlhp.streams.tap import Packet, rate_packets


class FakeTime:
    """A clock and a sleep that only move when told (no real waiting in these tests)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_chunk_is_ten_milliseconds_of_packets() -> None:
    assert chunk_for(20_000) == 200
    assert chunk_for(50) == 1
    assert chunk_for(150) == 2
    with pytest.raises(ValueError, match="rate"):
        chunk_for(0)


def test_total_packets_is_rate_times_duration() -> None:
    assert total_packets(5000, 60) == 300_000
    assert total_packets(0.5, 1) == 1
    with pytest.raises(ValueError, match="> 0"):
        total_packets(100, 0)


def test_schedule_releases_chunks_at_rate() -> None:
    pacer = RatePacer(1000.0, chunk=100)
    assert pacer.schedule(250) == [(0.0, 100), (0.1, 100), (0.2, 50)]
    assert sum(n for _, n in pacer.schedule(12_345)) == 12_345
    assert pacer.due(99) == 0.0
    assert pacer.due(100) == pytest.approx(0.1)


def test_wait_sleeps_until_each_chunk_is_due() -> None:
    t = FakeTime()
    pacer = RatePacer(1000.0, chunk=100, clock=t.clock, sleep=t.sleep)
    for i in range(300):
        pacer.wait(i)
    # chunk 0 goes at once; chunks 1 and 2 wait 0.1 s each (nothing else took time)
    assert t.slept == pytest.approx([0.1, 0.1])
    assert t.now == pytest.approx(1000.2)


def test_a_slow_tap_catches_up_at_most_burst_seconds() -> None:
    t = FakeTime()
    pacer = RatePacer(1000.0, chunk=100, burst_s=0.5, clock=t.clock, sleep=t.sleep)
    pacer.wait(0)
    t.now += 2.0  # the tap stalled for 2 s: 20 chunks are overdue
    pacer.wait(100)
    assert pacer.slid_s == pytest.approx(1.9 - 0.5)
    # after sliding, chunks are due again from 0.5 s behind: 5 chunks go without sleeping
    for chunk in range(2, 7):
        pacer.wait(chunk * 100)
    assert t.slept == []
    pacer.wait(700)
    assert len(t.slept) == 1


def test_rate_packets_cycles_the_capture_and_restamps() -> None:
    t = FakeTime()
    capture = [Packet(i, 1, 60, bytes([i])) for i in range(3)]
    pacer = RatePacer(100.0, chunk=2, clock=t.clock, sleep=t.sleep)
    out = list(rate_packets(capture, rate=100.0, count=7, pacer=pacer))
    assert [p.data for p in out] == [b"\x00", b"\x01", b"\x02", b"\x00", b"\x01", b"\x02", b"\x00"]
    stamps = [p.ts_ns for p in out]
    assert stamps == sorted(stamps)
    assert all(p.ts_ns > 10**18 for p in out)  # wall-clock nanoseconds, not capture times
    assert len(t.slept) == 3  # chunks 1, 2 and 3 of 4


def test_rate_packets_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    capture = [Packet(0, 1, 60, b"x")]
    assert list(rate_packets(capture, rate=1e6, count=100, stop=stop)) == []
