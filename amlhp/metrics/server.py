"""The ``/metrics`` HTTP endpoint of a process, and the one call that sets a stage's up.

It exists so that every stage process (tap, worker, sink, and later ones) starts its
metrics the same way: :func:`start_stage_metrics` creates the zero series of the steps it
runs, serves the process's registry (:func:`serve_metrics`, a daemon thread of
prometheus-client) and, for a consumer, starts the lag collector of its group;
:meth:`StageMetrics.close` stops all of it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from amlhp.metrics.definitions import PROCESS_STEPS, PipelineMetrics, process_metrics
from amlhp.metrics.exceptions import MetricsError
from amlhp.metrics.lag import ConsumerLagCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from amlhp.settings import Settings


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def target(self) -> str:
        """``host:port`` as Prometheus scrape configs want it."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)


def serve_metrics(
    registry: CollectorRegistry, port: int = 0, host: str = "127.0.0.1"
) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it back from the result).
    """
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    return MetricsServer(host, int(server.server_port), server, thread)


@dataclass
class StageMetrics:
    """What :func:`start_stage_metrics` started; :meth:`close` stops all of it."""

    metrics: PipelineMetrics
    server: MetricsServer | None
    lag: ConsumerLagCollector | None = None

    def close(self) -> None:
        if self.lag is not None:
            self.lag.close()
        if self.server is not None:
            self.server.close()


def start_stage_metrics(
    process: str,
    port: int | None,
    *,
    host: str = "127.0.0.1",
    settings: Settings | None = None,
    lag_group: str | None = None,
    lag_topics: Sequence[str] = (),
    lag_interval_s: float = 5.0,
) -> StageMetrics:
    """Initialise this process's metrics, serve them unless ``port`` is ``None``, and
    start the lag collector of ``lag_group`` on ``lag_topics`` when given."""
    from amlhp.encoders.reasons import OK, REASON_NAMES

    metrics = process_metrics()
    metrics.init_steps(PROCESS_STEPS[process], [r for r in REASON_NAMES if r != OK])
    lag = None
    if settings is not None and lag_group and lag_topics:
        lag = ConsumerLagCollector(settings, lag_group, lag_topics, interval_s=lag_interval_s)
        metrics.registry.register(lag)
        lag.start()
    server = serve_metrics(metrics.registry, port, host) if port is not None else None
    return StageMetrics(metrics, server, lag)
