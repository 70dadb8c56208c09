"""Sub-commands of `amlhp` contributed by the `dashboards` stage.

* ``amlhp dashboards generate [--check]``: write (or verify) ``dashboards/generated``.
* ``amlhp dashboards queries``: every panel's PromQL, one JSON object per line.
* ``amlhp dashboards push --grafana-url URL``: upload with grafana-client.
* ``amlhp report PARQUET_DIR --out report.html``: the HTML run report.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import typer

from amlhp.context import settings_of


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""
    dashboards = typer.Typer(help="Grafana dashboards generated from code.", no_args_is_help=True)
    app.add_typer(dashboards, name="dashboards")

    @dashboards.command("generate")
    def generate(
        check: bool = typer.Option(
            False, "--check", help="Only verify that the committed JSON is up to date (exit 1)"
        ),
    ) -> None:
        """Write dashboards/generated/*.json from the code (sorted, deterministic JSON)."""
        from amlhp.dashboards.generate import GENERATED_DIR, stale_files, write_generated

        if check:
            stale = stale_files()
            if stale:
                typer.echo(
                    f"out of date in {GENERATED_DIR}: {', '.join(stale)} "
                    "(run `amlhp dashboards generate`)",
                    err=True,
                )
                raise typer.Exit(1)
            typer.echo(json.dumps({"up_to_date": True, "dir": str(GENERATED_DIR)}))
            return
        written = write_generated()
        typer.echo(json.dumps({"written": [str(p) for p in written]}))

    @dashboards.command("queries")
    def queries() -> None:
        """Print every panel's PromQL query (one JSON object per line)."""
        from amlhp.dashboards.generate import load_generated, panel_queries

        for dashboard in load_generated().values():
            for query in panel_queries(dashboard):
                typer.echo(json.dumps(asdict(query), sort_keys=True))

    @dashboards.command("push")
    def push(
        ctx: typer.Context,
        grafana_url: str = typer.Option(..., "--grafana-url", help="e.g. http://127.0.0.1:3000"),
        prometheus_url: str = typer.Option(
            "http://127.0.0.1:9090",
            "--prometheus-url",
            help="Prometheus as Grafana reaches it (for the data source it creates)",
        ),
    ) -> None:
        """Upload the dashboards and create or check the Prometheus data source.

        The token is read from AMLHP_GRAFANA_TOKEN (a service-account token); without
        one, credentials in the URL (http://user:password@host:3000) are used.
        """
        from amlhp.dashboards.push import push_dashboards

        settings = settings_of(ctx)
        result = push_dashboards(grafana_url, settings.grafana_token, prometheus_url)
        for warning in result.warnings:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(json.dumps(result.as_dict(), sort_keys=True))

    @app.command("report")
    def report(
        parquet_dir: Path = typer.Argument(..., help="Verdict dataset (the sink's --out)"),
        out: Path = typer.Option(Path("report.html"), "--out", "-o", help="HTML file to write"),
        since: datetime | None = typer.Option(
            None, "--since", help="Only packets captured at or after (ISO time, UTC)"
        ),
        until: datetime | None = typer.Option(
            None, "--until", help="Only packets captured before (ISO time, UTC)"
        ),
        truth: Path | None = typer.Option(
            None,
            "--truth",
            help="True labels (Parquet/CSV: seq, label[, gateway]) for a confusion matrix",
        ),
        title: str | None = typer.Option(None, "--title", help="Page title"),
        alerts: Path | None = typer.Option(
            None,
            "--alerts",
            help="Alert dataset (the alerts sink's --out) for the incidents section; "
            "default: the dataset's sibling folder 'alerts' when there is one",
        ),
    ) -> None:
        """Render a self-contained HTML report (plots inline) of one run or a time range."""
        from amlhp.dashboards.report import write_report

        summary = write_report(
            parquet_dir, out, since=since, until=until, truth=truth, title=title, alerts=alerts
        )
        typer.echo(json.dumps(summary, sort_keys=True))
