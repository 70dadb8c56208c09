"""Micro-batches bounded by size and by time, the one batching rule of the pipeline.

A batch is emitted when it holds ``max_items`` items or when its oldest item has waited
``max_delay_s`` seconds, whichever comes first (Triton-style dynamic batching). The
clock is injectable so that the rule is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class SizeTimeBatcher(Generic[T]):
    """Accumulates items; :meth:`add` and :meth:`poll` return a full or overdue batch."""

    max_items: int
    max_delay_s: float
    clock: Callable[[], float] = time.monotonic
    _items: list[T] = field(default_factory=list)
    _first_at: float | None = None

    def __post_init__(self) -> None:
        if self.max_items < 1:
            raise ValueError("max_items must be >= 1")
        if self.max_delay_s < 0:
            raise ValueError("max_delay_s must be >= 0")

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> list[T] | None:
        """Add one item; return the batch if this item filled it or it is overdue."""
        if not self._items:
            self._first_at = self.clock()
        self._items.append(item)
        if len(self._items) >= self.max_items:
            return self.drain()
        return self.poll()

    def poll(self) -> list[T] | None:
        """Return the batch if its oldest item has waited long enough, else ``None``."""
        overdue = self._first_at is not None and self.clock() - self._first_at >= self.max_delay_s
        return self.drain() if self._items and overdue else None

    def time_left(self) -> float | None:
        """Seconds until the current batch is overdue (``None`` when empty)."""
        if not self._items or self._first_at is None:
            return None
        return max(0.0, self.max_delay_s - (self.clock() - self._first_at))

    def drain(self) -> list[T]:
        """Return whatever is buffered (possibly nothing) and start a new batch."""
        items, self._items, self._first_at = self._items, [], None
        return items
