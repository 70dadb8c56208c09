"""Faust's own Prometheus sensor, in the registry of the process's pipeline metrics.

It exists so that a Faust worker's events, sends, commits and rebalances
(``amlhp_faust_*``) are served on the same ``/metrics`` endpoint as the pipeline's
families, and so that a failed send also counts as a producer delivery failure of the
``worker`` step, like the tap's failed deliveries. Faust is imported only when a worker
installs it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amlhp.metrics.definitions import PipelineMetrics


def install_faust_monitor(app: Any, metrics: PipelineMetrics) -> None:
    """Faust's own Prometheus sensor (``amlhp_faust_*``: events, sends, commits,
    rebalances) in this process's registry; failed sends also count as
    ``amlhp_producer_delivery_failures_total{step="worker"}``."""
    from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

    failures = metrics.delivery_failures

    class _Monitor(PrometheusMonitor):
        def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
            super().on_send_error(producer, exc, state)
            failures.labels("worker").inc()

    failures.labels("worker")
    app.monitor = _Monitor(metrics=FaustMetrics.create(metrics.registry, "amlhp_faust"))
