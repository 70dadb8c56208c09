"""Errors of the `infra` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class InfraError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.infra`."""
