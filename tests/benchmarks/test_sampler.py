"""Lag in seconds from the watermark history, and cores used from CPU-time samples."""

from __future__ import annotations

import pytest

from amlhp.benchmarks.sampler import OffsetHistory, cpu_shares


def test_appended_at_interpolates_between_watermark_samples() -> None:
    h = OffsetHistory()
    h.add(10.0, 0)
    h.add(11.0, 100)
    h.add(12.0, 100)
    h.add(13.0, 300)
    assert h.appended_at(0) == pytest.approx(10.01)  # first of 100 appended in (10, 11]
    assert h.appended_at(99) == pytest.approx(11.0)
    assert h.appended_at(100) == pytest.approx(12.005)  # first of 200 appended in (12, 13]
    assert h.appended_at(300) is None  # not appended yet: no lag


def test_appended_before_history_is_dated_at_the_first_sample() -> None:
    h = OffsetHistory()
    h.add(50.0, 40)
    assert h.appended_at(5) == 50.0
    h.add(49.0, 10)  # a stale, lower watermark never rewrites history
    assert h.highs == [40]


def test_cpu_shares_in_cores() -> None:
    samples = [
        {"t": 0.0, "cpu_worker": 10.0, "cpu_machine": 100.0},
        {"t": 5.0, "cpu_worker": 14.0, "cpu_machine": 108.0, "cpu_tap": 1.0},
        {"t": 10.0, "cpu_worker": 18.0, "cpu_machine": 118.0, "cpu_tap": 2.0},
    ]
    shares = cpu_shares(samples)
    assert shares["worker"] == pytest.approx(0.8)
    assert shares["tap"] == pytest.approx(0.1)  # seen for half the span: 1 s of CPU in 10 s
    assert shares["machine"] == pytest.approx(1.8)
    assert shares["other"] == pytest.approx(0.9)
    assert cpu_shares(samples[:1]) == {}
