"""The ``amlhp`` command: a thin Typer front end over the library functions.

Each stage package contributes its sub-commands through a ``register(app)`` function in
its own ``cli.py``; heavy imports (torch, faust) happen inside the commands, never at
import time, so ``amlhp --help`` stays fast.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import typer

from amlhp import __version__
from amlhp.context import AppContext
from amlhp.errors import AmlhpError
from amlhp.settings import Settings, load_settings, unknown_env


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
        # help text is Markdown: paragraphs reflow, and "[default model]" is not a style tag
        rich_markup_mode="markdown",
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
            [], "-X", help="librdkafka property name=value (repeatable) [AMLHP_RDKAFKA_*]"
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
        flags = {
            "bootstrap_servers": bootstrap_servers,
            "partitions": partitions,
            "replication_factor": replication_factor,
        }
        ctx.obj = AppContext(lambda: _settings(flags, rdkafka))

    @app.command("settings")
    def settings_cmd(
        ctx: typer.Context,
        markdown: bool = typer.Option(
            False, "--markdown", help="Print the table of every variable instead (docs/infra.md)"
        ),
    ) -> None:
        """Print the effective settings as JSON (environment and flags applied, secrets
        masked), or with --markdown every AMLHP_* variable with its default."""
        import json

        from amlhp.context import settings_of
        from amlhp.settings import settings_table

        if markdown:
            typer.echo(settings_table())
        else:
            typer.echo(json.dumps(settings_of(ctx).redacted(), indent=1))

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
    from amlhp.alerts import site_cli

    # `amlhp model adapt` reads the topic and runs the alert engine: registered from here
    model_group = next(g.typer_instance for g in app.registered_groups if g.name == "model")
    assert model_group is not None
    site_cli.register(model_group)
    _group_by_audience(app)
    return app


#: ``amlhp --help`` lists the commands in these panels, by who uses them
PANELS: dict[str, tuple[str, ...]] = {
    "Run the pipeline (operators)": (
        "demo", "tap", "worker", "sink", "alerts-stage", "alerts-sink", "alerts-export",
        "alerts-feedback", "topics", "infra",
        "settings", "dashboards", "flows", "devices",
    ),
    "Offline and history (data engineers, ops)": (
        "score", "alerts", "report", "replay", "replay-diff", "encode", "explain", "extract",
    ),
    "Models, lab and measurements (developers)": (
        "train", "evaluate", "model", "lab", "bench", "chaos", "alerts-evaluate", "alerts-lab",
        "alerts-feedback-data",
        "demo-capture",
    ),
}  # fmt: skip


def _group_by_audience(app: typer.Typer) -> None:
    """Put every top-level command and group into its :data:`PANELS` panel."""
    panel_of = {name: panel for panel, names in PANELS.items() for name in names}
    infos: list[Any] = [*app.registered_commands, *app.registered_groups]
    for info in infos:
        name = info.name or (info.callback.__name__ if info.callback else "")
        info.rich_help_panel = panel_of.get(name, info.rich_help_panel)


def _settings(flags: dict[str, Any], rdkafka: list[str]) -> Settings:
    """The invocation's settings (built when a command first needs them), with a warning
    for what would otherwise pass silently: a misspelt ``AMLHP_*`` variable, a home
    folder that does not exist yet (it is created)."""
    for name in unknown_env(os.environ):
        typer.echo(f"warning: unknown environment variable {name}", err=True)
    settings = load_settings(flags, rdkafka_flags=rdkafka)
    if not settings.home.exists():
        typer.echo(
            f"warning: AMLHP_HOME {settings.home} does not exist (what writes there creates it)",
            err=True,
        )
    return settings


def _kafka_error(exc: BaseException) -> str | None:
    """The one-line text of a Kafka client's error (a bad ``-X`` property, ...), else None."""
    kafka = sys.modules.get("confluent_kafka")
    if kafka is None or not isinstance(exc, kafka.KafkaException):
        return None
    error = exc.args[0] if exc.args else None
    return f"Kafka: {error.str() if error is not None and hasattr(error, 'str') else exc}"


def main() -> None:
    """Console entry point: usage errors and errors we raise on purpose become one or two
    lines and exit code 2, never a traceback."""
    app = build_app()
    try:
        # Without standalone mode click returns (not raises) the code of `typer.Exit(n)`.
        code = app(standalone_mode=False)
    except AmlhpError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # typer's own click: usage errors, bad values
        typer.echo(f"error: {exc.format_message()}", err=True)
        command = getattr(getattr(exc, "ctx", None), "command_path", None)
        if command:
            typer.echo(f"Try '{command} --help' for help.", err=True)
        sys.exit(2)
    except Exception as exc:
        text = _kafka_error(exc)
        if text is None:
            raise
        typer.echo(f"error: {text}", err=True)
        sys.exit(2)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


if __name__ == "__main__":
    main()
