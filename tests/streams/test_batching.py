"""The size-or-time batching rule used by the tap (and mirrored by the worker's micro-batches)."""

from __future__ import annotations

import pytest

from amlhp.streams.batching import SizeTimeBatcher
from tests.support.clock import ManualClock


def test_emits_when_full() -> None:
    b: SizeTimeBatcher[int] = SizeTimeBatcher(3, 10.0, clock=ManualClock())
    assert b.add(1) is None
    assert b.add(2) is None
    assert b.add(3) == [1, 2, 3]
    assert len(b) == 0


def test_emits_when_oldest_item_is_overdue() -> None:
    clock = ManualClock()
    b: SizeTimeBatcher[str] = SizeTimeBatcher(100, 0.05, clock=clock)
    b.add("a")
    clock.now += 0.03
    assert b.add("b") is None
    assert b.time_left() == pytest.approx(0.02)
    clock.now += 0.021
    assert b.poll() == ["a", "b"]
    assert b.poll() is None
    assert b.time_left() is None


def test_drain_returns_rest_and_resets() -> None:
    b: SizeTimeBatcher[int] = SizeTimeBatcher(10, 1.0, clock=ManualClock())
    for i in range(4):
        b.add(i)
    assert b.drain() == [0, 1, 2, 3]
    assert b.drain() == []


@pytest.mark.parametrize(("size", "delay"), [(0, 1.0), (1, -1.0)])
def test_rejects_bad_bounds(size: int, delay: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        SizeTimeBatcher(size, delay)
