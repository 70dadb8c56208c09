"""The ``--metrics-port`` option and the start of a stage's ``/metrics``, for every stage
command (packet worker, sinks, alert stage, flow worker) from one place."""

from __future__ import annotations

from typing import Any

import typer


def metrics_option(default: int | None = 0) -> Any:
    """The ``--metrics-port`` option of every long-running stage command (the same default,
    a free port, everywhere: several stages of one kind can share a machine)."""
    return typer.Option(
        default,
        "--metrics-port",
        help="Serve Prometheus metrics on AMLHP_METRICS_HOST:PORT/metrics (0: a free port, "
        "printed on stderr; -1: off; docs/deploying.md lists fixed ports per stage)",
    )


def start_metrics(process: str, port: int, settings: Any, **lag: Any) -> Any:
    """Start this process's /metrics endpoint on the settings' metrics host (and its lag
    collector); say where on stderr."""
    from amlhp.metrics.server import start_stage_metrics

    started = start_stage_metrics(
        process,
        None if port < 0 else port,
        host=settings.metrics_host,
        settings=settings,
        **lag,
    )
    if started.server is not None:
        typer.echo(f"{process}: metrics on {started.server.url}", err=True)
    return started
