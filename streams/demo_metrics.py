"""The metric endpoints of ``amlhp demo``: its fixed ports and their Prometheus targets.

It exists so that the demo's ports live with the demo rather than in the shared metrics
layer: the demo serves the tap's metrics in its own process, hands the worker and sink
the ports they serve on, and registers all of them with the local Prometheus
(``make prometheus-up``, which ``infra/prometheus-compose.yml`` also scrapes) when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from amlhp.metrics.server import StageMetrics, start_stage_metrics

#: Where `amlhp demo` serves each process's metrics (infra/prometheus-compose.yml scrapes
#: these); a port already taken is replaced by a free one.
DEMO_PORTS = {"tap": 9470, "worker": 9471, "sink": 9472, "alerts": 9473}


def port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when nothing listens there, else a free port the OS picks."""
    import socket

    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free TCP port on {host}")


@dataclass
class DemoMetrics:
    """The demo's metric endpoints; the tap's is served by the demo process itself."""

    ports: dict[str, int]
    tap: StageMetrics
    home: Path = field(default_factory=Path.cwd)
    prometheus_url: str | None = None
    _targets: list[str] = field(default_factory=list)

    @property
    def endpoints(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{port}/metrics" for name, port in self.ports.items()}

    def describe(self) -> list[str]:
        """Lines for the user: where to scrape, and whether Prometheus records them."""
        lines = [f"metrics of {name}: {url}" for name, url in self.endpoints.items()]
        if self.prometheus_url:
            lines.append(f"Prometheus at {self.prometheus_url} scrapes them (job amlhp)")
        else:
            lines.append("Prometheus is not running: `make prometheus-up` records them")
        return lines

    def close(self) -> None:
        from amlhp.infra import prometheus_server
        from amlhp.infra.paths import default_paths

        layout = prometheus_server.prometheus_layout(default_paths(self.home))
        for name in self._targets:
            prometheus_server.unregister_target(layout, name)
        self.tap.close()


def start_demo_metrics(run_id: str, home: Path) -> DemoMetrics:
    """Pick the demo's ports, serve the tap's metrics here, and register all of them with
    the local Prometheus of the home (``make prometheus-up``) when it runs."""
    from amlhp.infra import prometheus_server
    from amlhp.infra.paths import default_paths

    ports = {name: port_or_free(port) for name, port in DEMO_PORTS.items()}
    demo = DemoMetrics(ports, start_stage_metrics("tap", ports["tap"]), home)
    layout = prometheus_server.prometheus_layout(default_paths(home))
    if prometheus_server.pid(layout) is not None:
        demo.prometheus_url = layout.url
        for name, port in ports.items():
            target = f"demo-{name}"
            prometheus_server.register_target(
                layout, target, f"127.0.0.1:{port}", {"run": run_id, "process": name}
            )
            demo._targets.append(target)
    return demo
