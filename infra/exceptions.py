"""Errors of the `infra` stage, rooted in :class:`amlhp.errors.AmlhpError`."""

from amlhp.errors import AmlhpError


class InfraError(AmlhpError):
    """Base class of the errors raised on purpose by `amlhp.infra`."""


class FetchError(InfraError):
    """Maven could not provide the Kafka jars (or they are not fetched yet)."""


class KafkaStartError(InfraError):
    """A broker could not be formatted or started, or did not answer in time."""


class PrometheusError(InfraError):
    """Prometheus is missing, did not start, or does not answer."""
