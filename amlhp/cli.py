"""The ``amlhp`` command: a thin Typer front end over the library functions.

Each stage package contributes its sub-commands through a ``register(app)`` function in
its own ``cli.py``; heavy imports (torch, faust) happen inside the commands, never at
import time, so ``amlhp --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys

import typer

from amlhp import __version__
from amlhp.context import AppContext
from amlhp.errors import AmlhpError
from amlhp.settings import load_settings


def _version(value: bool) -> None:
    if value:
        typer.echo(f"amlhp {__version__}")
        raise typer.Exit()


def build_app() -> typer.Typer:
    """Assemble the CLI from the stage packages."""
    app = typer.Typer(
        name="amlhp",
        help="Streaming, packet-by-packet malicious IoT traffic classification (IoT-AMLHP).",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        bootstrap_servers: str | None = typer.Option(
            None,
            "--bootstrap-servers",
            "-b",
            help="Kafka bootstrap servers [AMLHP_BOOTSTRAP_SERVERS]",
        ),
        partitions: int | None = typer.Option(
            None, "--partitions", help="Partitions per topic [AMLHP_PARTITIONS]"
        ),
        replication_factor: int | None = typer.Option(
            None, "--replication-factor", help="Replicas per topic [AMLHP_REPLICATION_FACTOR]"
        ),
        rdkafka: list[str] = typer.Option(
            [], "-X", help="librdkafka property name=value (repeatable) [AMLHP_RDKAFKA_<NAME>]"
        ),
        verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging"),
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version"
        ),
    ) -> None:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        settings = load_settings(
            {
                "bootstrap_servers": bootstrap_servers,
                "partitions": partitions,
                "replication_factor": replication_factor,
            },
            rdkafka_flags=rdkafka,
        )
        ctx.obj = AppContext(settings=settings)

    from amlhp.alerts import cli as alerts_cli
    from amlhp.benchmarks import cli as bench_cli
    from amlhp.chaos import cli as chaos_cli
    from amlhp.dashboards import cli as dashboards_cli
    from amlhp.encoders import cli as encoders_cli
    from amlhp.flows import cli as flows_cli
    from amlhp.infra import cli as infra_cli
    from amlhp.lab import cli as lab_cli
    from amlhp.model import cli as model_cli
    from amlhp.streams import cli as streams_cli
    from amlhp.streams import pipeline_cli

    for module in (
        infra_cli,
        streams_cli,
        pipeline_cli,
        encoders_cli,
        model_cli,
        dashboards_cli,
        bench_cli,
        lab_cli,
        flows_cli,
        alerts_cli,
        chaos_cli,
    ):
        module.register(app)
    return app


def main() -> None:
    """Console entry point: errors we raise on purpose become one line and exit code 2."""
    app = build_app()
    try:
        # Without standalone mode click returns (not raises) the code of `typer.Exit(n)`.
        code = app(standalone_mode=False)
    except AmlhpError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
