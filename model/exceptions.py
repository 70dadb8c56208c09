"""Errors of the `model` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class ModelError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.model`."""


class UnknownModelError(ModelError):
    """No model of that name, or arguments it does not take."""


class ArtifactError(ModelError):
    """A model artifact is missing, tampered with, or does not match its metadata."""


class LabelsError(ModelError):
    """The labels file is malformed, or names captures that do not exist."""


class DatasetError(ModelError):
    """The labelled data cannot be used (no packets, a class without packets, bad split)."""


class ScoringError(ModelError):
    """Encoded records cannot be scored by this model (wrong payload length, layout...)."""
