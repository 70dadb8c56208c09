"""Errors of the `benchmarks` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class BenchmarksError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.benchmarks`."""
