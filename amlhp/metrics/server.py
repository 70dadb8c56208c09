"""The ``/metrics`` HTTP endpoint of a process, and the one call that sets a stage's up.

It exists so that every stage process (tap, worker, sink, and later ones) starts its
metrics the same way: :func:`start_stage_metrics` creates the zero series of the steps it
runs, serves the process's registry (:func:`serve_metrics`) and, for a consumer, starts
the lag collector of its group; :meth:`StageMetrics.close` stops all of it.

The endpoint listens on ``AMLHP_METRICS_HOST`` (loopback unless set), and can serve HTTPS
only and answer only HTTP basic authentication (:class:`EndpointSecurity`, from the
settings). prometheus-client's ``start_http_server`` has TLS since 0.19 (certfile,
keyfile, client CA: PR #946) but no authentication, which its maintainers leave to the
application (PR #610 declined), so the endpoint is prometheus-client's WSGI app
(``make_wsgi_app``) behind a basic-auth check, served by the standard library's threaded
WSGI server with an ``ssl`` context: one path whether or not either is set.
"""

from __future__ import annotations

import base64
import hmac
import socket
import ssl
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from amlhp.metrics.definitions import PROCESS_STEPS, PipelineMetrics, process_metrics
from amlhp.metrics.exceptions import MetricsError
from amlhp.metrics.lag import ConsumerLagCollector

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from amlhp.settings import Settings


@dataclass(frozen=True)
class EndpointSecurity:
    """HTTPS (certificate chain and key, PEM) and basic authentication of an endpoint."""

    tls_cert: Path | None = None
    tls_key: Path | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointSecurity:
        password = settings.metrics_password
        return cls(
            settings.metrics_tls_cert,
            settings.metrics_tls_key,
            settings.metrics_user,
            password.get_secret_value() if password is not None else None,
        )

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.tls_cert is None:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise MetricsError(
                f"cannot load the metrics certificate {self.tls_cert} and key "
                f"{self.tls_key}: {exc.strerror or exc}"
            ) from None
        return context

    def guard(self, app: Any) -> Any:
        """``app`` answering only requests with this user's basic credentials (401 else)."""
        if self.user is None or self.password is None:
            return app
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

        def guarded(environ: dict[str, Any], start_response: Any) -> Any:
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if scheme.lower() == "basic" and hmac.compare_digest(token.strip(), expected):
                return app(environ, start_response)
            start_response(
                "401 Unauthorized",
                [("WWW-Authenticate", 'Basic realm="amlhp metrics"'),
                 ("Content-Type", "text/plain")],
            )  # fmt: skip
            return [b"authentication required\n"]

        return guarded


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        return


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    host: str
    port: int
    _server: Any = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/metrics"

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
    registry: CollectorRegistry,
    port: int = 0,
    host: str = "127.0.0.1",
    security: EndpointSecurity | None = None,
) -> MetricsServer:
    """Serve ``registry`` on ``http(s)://host:port/metrics`` from a daemon thread.

    ``port=0`` picks a free port (read it back from the result).
    """
    from prometheus_client import make_wsgi_app

    security = security or EndpointSecurity()
    context = security.ssl_context()

    class Server(_ThreadingServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(
            host, port, security.guard(make_wsgi_app(registry)), Server, _QuietHandler
        )
    except OSError as exc:
        raise MetricsError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    scheme = "https" if context is not None else "http"
    return MetricsServer(host, int(server.server_port), server, thread, scheme)


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
    security = EndpointSecurity.from_settings(settings) if settings is not None else None
    server = serve_metrics(metrics.registry, port, host, security) if port is not None else None
    return StageMetrics(metrics, server, lag)
