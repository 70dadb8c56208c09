"""Errors of the `flows` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class FlowsError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.flows`."""


class FlowConfigError(FlowsError, ValueError):
    """A flow assembler option makes no sense (bad subnet, lifetime, sizes)."""


class FlowDatasetError(FlowsError):
    """Flow data cannot be built or used (no labelled flow, missing class, bad split)."""


class FlowArtifactError(FlowsError):
    """A flow model artifact is missing, tampered with, or inconsistent."""


class FlowStateError(FlowsError):
    """Bytes that should hold a serialised flow state do not."""
