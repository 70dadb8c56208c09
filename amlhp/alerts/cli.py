"""``amlhp alerts`` (offline), ``alerts-stage``, ``alerts-sink`` and ``alerts-evaluate``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from amlhp.context import settings_of


def register(app: typer.Typer) -> None:
    """Add the alert commands to the root app."""

    @app.command("alerts")
    def alerts_cmd(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(..., help="pcap/pcapng files or folders"),
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact (default: bundled)"
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per incident"),
        gateway: str = typer.Option("offline", "--gateway", "-g", help="Gateway id of the input"),
        per_file: bool = typer.Option(
            False, "--per-file", help="Each file is its own gateway (named after the file)"
        ),
    ) -> None:
        """The incidents the alert stage would raise on these captures (same code as the
        stream; thresholds from the AMLHP_ALERT_* settings)."""
        from amlhp.alerts.offline import alerts_from_captures
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.model.scorer import default_model_path, load_scorer
        from amlhp.pipeline.incidents import incident_json, print_incidents

        settings = settings_of(ctx)
        scorer = load_scorer(model or default_model_path())
        run = alerts_from_captures(
            captures,
            scorer,
            AlertPolicy.from_settings(settings),
            gateway=gateway,
            per_file=per_file,
        )
        if as_json:
            for row in run.incidents:
                typer.echo(json.dumps(incident_json(row)))
            return
        print_incidents(run.incidents, title=f"{len(run.incidents)} incidents")
        typer.echo(json.dumps({"packets": run.packets, "incidents": len(run.incidents)}))

    @app.command("alerts-stage")
    def alerts_stage_cmd(
        ctx: typer.Context,
        app_id: str | None = typer.Option(None, "--app-id", help="Faust app id / group"),
        metrics_port: int = typer.Option(
            0, "--metrics-port", help="Serve metrics on 127.0.0.1:PORT (0: free port; -1: off)"
        ),
    ) -> None:
        """Run the alert stage: verdicts -> incidents on the alert topic (Faust)."""
        from amlhp.alerts.stage import AlertStageOptions, run_alert_stage
        from amlhp.metrics.server import start_stage_metrics
        from amlhp.pipeline.children import log_settings

        settings = settings_of(ctx)
        log_settings("alerts", settings)
        group = app_id or f"{settings.consumer_group}-alerts"
        started = start_stage_metrics(
            "alerts",
            None if metrics_port < 0 else metrics_port,
            settings=settings,
            lag_group=group,
            lag_topics=[settings.topic_verdicts],
        )
        if started.server is not None:
            typer.echo(f"alerts: metrics on {started.server.url}", err=True)
        run_alert_stage(settings, AlertStageOptions(app_id=app_id))

    @app.command("alerts-sink")
    def alerts_sink_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(
            Path("out/alerts"), "--out", help="Dataset root (relative: under the home)"
        ),
        roll_rows: int = typer.Option(50_000, "--roll-rows", help="Rows per file at most"),
        roll_seconds: float = typer.Option(5.0, "--roll-seconds", help="Seconds per file at most"),
        group: str | None = typer.Option(None, "--group", help="Consumer group"),
        metrics_port: int = typer.Option(-1, "--metrics-port", help="Metrics port (-1: off)"),
    ) -> None:
        """Write the alert topic to a hive-partitioned Parquet dataset (exactly once per file)."""
        from amlhp.alerts.sink import AlertSink
        from amlhp.pipeline.children import log_settings
        from amlhp.streams.pipeline_cli import run_sink

        settings = settings_of(ctx)
        log_settings("alert-sink", settings)
        run_sink(
            settings,
            AlertSink,
            "alert-sink",
            out,
            group=group,
            roll_rows=roll_rows,
            roll_seconds=roll_seconds,
            metrics_port=metrics_port,
        )

    @app.command("alerts-evaluate")
    def alerts_evaluate_cmd(
        ctx: typer.Context,
        public: Path = typer.Option(
            Path("../shared/data/public"), "--public", help="Folder of the public captures"
        ),
        out: Path = typer.Option(
            Path("model/results/alerts"), "--out", help="Folder of alerts.json and alerts.md"
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact (default: bundled)"
        ),
    ) -> None:
        """The thresholds' figures: lab demo incidents, false incidents per device-hour on
        the benign public captures, detection and time to alert on the attack captures."""
        from amlhp.alerts.evaluate import evaluate, write_results
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.data import DEMO_CAPTURE
        from amlhp.model.scorer import default_model_path, load_scorer

        settings = settings_of(ctx)
        policy = AlertPolicy.from_settings(settings)
        result = evaluate(load_scorer(model or default_model_path()), policy, DEMO_CAPTURE, public)
        written = write_results(result, policy, settings.under_home(out))
        typer.echo(json.dumps({"written": [str(p) for p in written]}))
