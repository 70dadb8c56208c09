"""Sub-commands of `amlhp` contributed by the `streams` stage."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from amlhp.context import settings_of


def _topics_create(
    ctx: typer.Context,
    partitions: int | None,
    replication_factor: int | None,
    retention_ms: int | None,
    as_json: bool,
    acls: bool = False,
    principals: list[str] | None = None,
) -> None:
    from amlhp.infra.cli import parse_principals
    from amlhp.streams.topics import ensure_pipeline_topics

    settings = settings_of(ctx)
    overrides = parse_principals(principals or [])
    results = ensure_pipeline_topics(
        settings,
        partitions=partitions,
        replication_factor=replication_factor,
        retention_ms=retention_ms,
    )
    applied = 0
    if acls:
        from amlhp.infra.kafka_acls import apply_acls, stage_acls
        from amlhp.streams.topics import admin_client

        applied = apply_acls(admin_client(settings.kafka_config()), stage_acls(settings, overrides))
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results]))
        return
    for r in results:
        state = "created" if r.created else "exists"
        typer.echo(f"{r.name}\t{state}\tpartitions={r.partitions}")
    if acls:
        typer.echo(f"acls\tapplied\t{applied} entries (amlhp infra kafka acls lists them)")


def _topics_list(ctx: typer.Context, show_all: bool, as_json: bool) -> None:
    from amlhp.streams.topics import admin_client, list_topics

    settings = settings_of(ctx)
    wanted = set(settings.topics.all())
    topics = list_topics(admin_client(settings.kafka_config()), include_internal=show_all)
    if not show_all:
        topics = [t for t in topics if t.name in wanted]
    if as_json:
        typer.echo(json.dumps([asdict(t) for t in topics]))
        return
    for t in topics:
        typer.echo(f"{t.name}\tpartitions={t.partitions}\treplication={t.replication_factor}")


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""
    from amlhp.streams import replay_cli

    replay_cli.register(app)
    topics = typer.Typer(help="The pipeline's Kafka topics.", no_args_is_help=True)
    app.add_typer(topics, name="topics")

    @topics.command("create")
    def topics_create(
        ctx: typer.Context,
        partitions: int | None = typer.Option(None, "--partitions", min=1, help="Per topic"),
        replication_factor: int | None = typer.Option(
            None, "--replication-factor", min=1, help="Replicas per partition"
        ),
        retention_ms: int | None = typer.Option(None, "--retention-ms", min=-1, help="-1: keep"),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
        acls: bool = typer.Option(
            False, "--acls", help="Also allow each stage's principal what it needs (and no more)"
        ),
        principal: list[str] = typer.Option(
            [], "--principal", help="With --acls, STAGE=NAME: another principal (repeatable)"
        ),
    ) -> None:
        """Create the pipeline topics (those that exist are left as they are)."""
        _topics_create(ctx, partitions, replication_factor, retention_ms, as_json, acls, principal)

    @topics.command("list")
    def topics_list(
        ctx: typer.Context,
        show_all: bool = typer.Option(False, "--all", help="Every topic, internal ones too"),
        as_json: bool = typer.Option(False, "--json", help="Print the topics as JSON"),
    ) -> None:
        """List the pipeline topics that exist, with partitions and replication factor."""
        _topics_list(ctx, show_all, as_json)

    @app.command("demo")
    def demo(
        ctx: typer.Context,
        capture: Path | None = typer.Option(
            None,
            "--capture",
            help="Capture to replay (default: the bundled lab demo capture, all 23 lab classes: "
            "22 attacks and benign)",
        ),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Verdict dataset (default: out/verdicts in the home)"
        ),
        model: Path | None = typer.Option(None, "--model", help="Model (default: bundled)"),
        attack_model: Path | None = typer.Option(
            None, "--attack-model", help="The flow worker's attack flow model (default: bundled)"
        ),
        timeout_s: float = typer.Option(600.0, "--timeout", help="Give up after (seconds)"),
    ) -> None:
        """Run the whole pipeline on the demo capture and account for every packet.

        Starts the local Kafka broker (unless pointed at another cluster), re-creates the
        pipeline topics, starts a worker and a sink, replays the capture through a tap,
        waits until every packet is a verdict or a dead letter, and prints the summary;
        the last line is one JSON object.
        """
        from amlhp.data import DEMO_CAPTURE
        from amlhp.infra import kafka_broker
        from amlhp.infra.kafka_config import single_layout
        from amlhp.infra.paths import default_paths
        from amlhp.infra.status_line import live_status
        from amlhp.streams.demo import print_summary, run_demo

        settings = settings_of(ctx)
        paths = default_paths(settings.home)
        layout = single_layout(paths)
        if settings.bootstrap_servers == layout.bootstrap_servers:
            with live_status("Kafka: starting the local broker") as on_status:
                result = kafka_broker.up(layout, paths=paths, on_status=on_status)
            typer.echo(
                f"Kafka ready on {result.bootstrap_servers} ({result.seconds:.1f}s)", err=True
            )
        else:
            typer.echo(f"using the Kafka cluster at {settings.bootstrap_servers}", err=True)
        with live_status("demo: starting worker and sink") as on_status:
            summary = run_demo(
                settings,
                capture or DEMO_CAPTURE,
                out or settings.home / "out" / "verdicts",
                paths.var / "demo",
                model=model,
                attack_model=attack_model,
                timeout_s=timeout_s,
                on_status=on_status,
            )
        print_summary(summary)
        typer.echo(json.dumps(summary, sort_keys=True))
        if not summary["complete"]:
            raise typer.Exit(1)
