"""The error of the metrics layer, rooted in :class:`amlhp.errors.AmlhpError`.

The metrics layer sits below the stages, so it cannot raise a stage's error; the CLI
catches :class:`~amlhp.errors.AmlhpError`, so a port that cannot be served still ends
``amlhp`` with a message rather than a traceback.
"""

from amlhp.errors import AmlhpError


class MetricsError(AmlhpError):
    """A process's metrics cannot be served (the port is taken or not allowed)."""
