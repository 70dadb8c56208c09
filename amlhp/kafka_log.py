"""The Kafka clients' own log, through Python logging with repeats held back.

Base layer: every stage, the metrics' lag reader and the topic admin build clients with
:func:`with_logger`.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

#: librdkafka's log of every client (through Python logging, repeats held back)
LIBRDKAFKA_LOGGER = "amlhp.librdkafka"
REPEAT_WINDOW_S = 60.0


class HoldRepeats(logging.Filter):
    """Lets one of each librdkafka message through per ``window_s``: an unreachable or
    restarting broker makes librdkafka log the same failed connect every few milliseconds
    per client (hundreds of lines a minute in every stage's log). Messages count as the
    same when they differ only in numbers (times, counts); the next one let through says
    how many were held back."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.window_s = window_s
        self.last: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        shown, held = self.last.get(key, (float("-inf"), 0))
        if now - shown < self.window_s:
            self.last[key] = (shown, held + 1)
            return False
        if held:
            record.msg = f"{record.msg} ({held} like it in the last {now - shown:.0f} s)"
        self.last[key] = (now, 0)
        if len(self.last) > 1000:  # bounded: forget the oldest keys
            for old in list(self.last)[:500]:
                del self.last[old]
        return True


def librdkafka_logger() -> logging.Logger:
    """The logger the Kafka clients log through (:class:`HoldRepeats` on it, once)."""
    log = logging.getLogger(LIBRDKAFKA_LOGGER)
    if not any(isinstance(f, HoldRepeats) for f in log.filters):
        log.addFilter(HoldRepeats())
    return log


def with_logger(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a client constructor, its log going to :func:`librdkafka_logger`
    (librdkafka otherwise writes every line to stderr itself)."""
    return {"logger": librdkafka_logger(), **config}
