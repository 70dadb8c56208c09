"""Errors of the `model` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class ModelError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.model`."""
