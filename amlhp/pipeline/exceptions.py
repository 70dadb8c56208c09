"""Errors of the shared pipeline layer, rooted in :class:`amlhp.errors.AmlhpError`.

The pipeline layer sits below the stages, so it cannot raise a stage's error; the CLI
catches :class:`~amlhp.errors.AmlhpError`, so a sink that cannot write still ends
``amlhp`` with a message rather than a traceback.
"""

from amlhp.errors import AmlhpError


class PipelineError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.pipeline`."""


class SinkError(PipelineError):
    """A Parquet sink cannot write its dataset or commit its offsets."""


class DiskFullError(SinkError):
    """A flush found no space for its files; nothing of it is kept as durable."""


class ChildExitedError(PipelineError):
    """A child stage process ended while it was expected to keep running."""
