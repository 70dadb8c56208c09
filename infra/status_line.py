"""A live one-line status on stderr for commands that wait (broker start, Prometheus start).

On a terminal it is a rich spinner whose text the waiting code updates; elsewhere (CI logs,
pipes) it prints a line only when the message changes in more than its numbers, so a log
does not fill with one line per poll.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from amlhp.infra.process import StatusCallback
from amlhp.progress import console

_DIGITS = re.compile(r"\d+")


@contextmanager
def live_status(initial: str) -> Iterator[StatusCallback]:
    """Yield a callback that replaces the status line's text."""
    if sys.stderr.isatty():
        with console().status(initial) as status:
            yield lambda text: status.update(text)
        return
    last = [_DIGITS.sub("#", initial)]
    print(initial, file=sys.stderr, flush=True)

    def update(text: str) -> None:
        shape = _DIGITS.sub("#", text)
        if shape != last[0]:
            last[0] = shape
            print(text, file=sys.stderr, flush=True)

    yield update
