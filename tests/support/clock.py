"""A clock the test moves by hand: time is an input of the code under test, not a wait."""

from __future__ import annotations


class ManualClock:
    """Callable like ``time.monotonic``; a test sets or advances ``now``."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
