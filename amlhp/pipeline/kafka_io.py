"""librdkafka client configurations for the pipeline's producers and consumers.

One place decides the delivery guarantees: producers are idempotent with acks from all
in-sync replicas and compression; consumers commit manually, only after the work that
depends on a message is durable.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from amlhp.settings import Settings

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


def producer_config(settings: Settings, client_id: str, **extra: Any) -> dict[str, Any]:
    """An idempotent, compressed producer: no loss and no duplicates on retries."""
    config: dict[str, Any] = {
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "message.max.bytes": 8_000_000,
        "message.timeout.ms": 120_000,
        "retries": 2_147_483_647,
    }
    config.update(extra)
    return with_logger(settings.kafka_config(**config))


#: Kafka header of a raw message: when the tap handed it to its producer (wall clock, ns).
#: The message's own timestamp is capture time (:func:`capture_timestamp_ms`), which for a
#: replayed capture is days old, so ingestion latency is measured from this header.
PUBLISHED_HEADER = "amlhp-published-at-ns"


def capture_timestamp_ms(newest_capture_ns: int) -> int:
    """Kafka timestamp of a message of packets (raw or verdicts): the capture time of its
    newest packet, never later than now. Every packet of the message was captured at or
    before it, which is what lets ``amlhp replay`` find a capture-time window with
    offsets-for-times (see :mod:`amlhp.streams.replay_plan`)."""
    import time

    return min(newest_capture_ns, time.time_ns()) // 1_000_000


def consumer_config(
    settings: Settings, group_id: str, client_id: str, **extra: Any
) -> dict[str, Any]:
    """A consumer that never auto-commits: offsets move only after durable processing."""
    config: dict[str, Any] = {
        "client.id": client_id,
        "group.id": group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "fetch.message.max.bytes": 8_000_000,
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 3),
    }
    config.update(extra)
    return with_logger(settings.kafka_config(**config))
