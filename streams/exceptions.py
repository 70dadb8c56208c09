"""Errors of the streaming stages, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class StreamsError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.streams`."""


class TapError(StreamsError):
    """The sensor tap cannot capture or publish (bad source, interface, settings)."""


class ModelReloadError(StreamsError):
    """A new model artifact was refused; the serving model keeps serving."""


class ExplainError(StreamsError):
    """A sampled verdict cannot be explained (the serving model has no plain torch module
    taking header and payload, or the encoded rows do not match the verdicts)."""


class ReplayError(StreamsError):
    """A replay cannot run as asked (bad window, missing topic, retention, another run's
    output in the folder); the message says what to change."""
