"""Stop signals of a long-running stage (tap, sink, flow sink).

Each stage loops until a :class:`threading.Event` is set and then flushes what it holds,
so SIGTERM (a supervisor, ``kill``) and SIGINT (Ctrl-C) must set that event rather than
interrupt the loop mid-write; every stage installs the same handler from here.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the stage then flushes and exits cleanly."""

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("signal %d received: flushing and stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
