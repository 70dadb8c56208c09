"""Errors of the fault suite."""

from amlhp.errors import AmlhpError


class ChaosError(AmlhpError):
    """A scenario could not run as planned (a stage would not start, the tap failed)."""


class ScenarioSkipped(ChaosError):
    """A scenario's precondition is missing (e.g. the local cluster is not running)."""
