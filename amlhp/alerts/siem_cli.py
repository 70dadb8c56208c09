"""What an operator's tools take from the pipeline: ``amlhp alerts-export`` (incidents
from the alert topic to a SIEM, live: :mod:`amlhp.alerts.export_stage`), ``amlhp
alerts-feedback`` (an analyst's verdict: :mod:`amlhp.alerts.feedback`) and ``amlhp
extract`` (the packets behind an incident as a pcap: :mod:`amlhp.alerts.extract`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from amlhp.context import settings_of
from amlhp.metrics.stage_cli import metrics_option, start_metrics


def register(app: typer.Typer) -> None:
    """Add ``alerts-export``, ``alerts-feedback`` and ``extract`` to the root app."""

    @app.command("alerts-export")
    def export_cmd(
        ctx: typer.Context,
        to: str = typer.Option(
            "-",
            "--to",
            help="Where: - (stdout), file:PATH (rotated), syslog+tcp://HOST:PORT, "
            "syslog+udp://HOST:PORT (?facility=local0) or an http(s):// webhook "
            "(bearer token from AMLHP_EXPORT_WEBHOOK_TOKEN)",
        ),
        fmt: str = typer.Option(
            "ecs", "--format", "-f", help="json, ecs (Elastic Common Schema), eve (Suricata) or cef"
        ),
        group: str | None = typer.Option(
            None,
            "--group",
            help="Consumer group (default: the consumer group's name + -export; one per SIEM)",
        ),
        status: list[str] = typer.Option(
            ["opened", "updated", "closed"],
            "--status",
            help="Export incident revisions of these statuses (repeatable)",
        ),
        max_attempts: int = typer.Option(
            8, "--max-attempts", min=1, help="Tries per record before it is dead-lettered"
        ),
        max_bytes: int = typer.Option(
            100 << 20, "--max-bytes", min=1024, help="file: rotate at this size"
        ),
        include_suppressed: bool = typer.Option(
            False, "--include-suppressed", help="Export incidents an allow-list rule covers too"
        ),
        until_end: bool = typer.Option(
            False, "--until-end", help="Stop at the end of the topic (a batch run) and print stats"
        ),
        metrics_port: int = metrics_option(),
    ) -> None:
        """Export incidents from the alert topic to a SIEM (at least once, offsets committed
        after delivery; what cannot be delivered goes to the dead-letter topic)."""
        import threading

        from amlhp.alerts.delivery import RetryPolicy, open_output
        from amlhp.alerts.exceptions import AlertsError
        from amlhp.alerts.export_stage import STATUSES, AlertExport, ExportOptions
        from amlhp.pipeline.signals import install_stop_signals

        unknown = set(status) - set(STATUSES)
        if unknown:
            raise AlertsError(f"--status {sorted(unknown)}: expected {', '.join(STATUSES)}")
        from amlhp.pipeline.access import check_access

        settings = settings_of(ctx)
        check_access(settings, "export", group=group)
        token = settings.export_webhook_token
        output = open_output(to, token.get_secret_value() if token else None, max_bytes)
        options = ExportOptions(
            fmt=fmt,
            group=group,
            statuses=tuple(status),
            policy=RetryPolicy(max_attempts=max_attempts),
            until_end=until_end,
            include_suppressed=include_suppressed,
        )
        export = AlertExport(settings, output, options)
        start_metrics("alerts-export", metrics_port, settings, lag_group=export.group,
                      lag_topics=[settings.topic_alerts])  # fmt: skip
        stop = threading.Event()
        install_stop_signals(stop)
        stats = export.run(stop)
        typer.echo(json.dumps({"to": output.name, **stats.as_dict()}), err=True)

    @app.command("alerts-feedback")
    def feedback_cmd(
        ctx: typer.Context,
        verdict: str = typer.Argument(..., help="ack, confirm or false-positive"),
        incident: str = typer.Argument(..., help="The incident id (from the alert topic)"),
        note: str | None = typer.Option(None, "--note", help="Why (kept with the verdict)"),
        analyst: str | None = typer.Option(None, "--analyst", help="Who (default: the login)"),
        suppress_days: float | None = typer.Option(
            None,
            "--suppress-days",
            help="false-positive only: also suppress this host's incidents of this kind on "
            "this gateway for DAYS (an allow-list rule)",
        ),
    ) -> None:
        """An analyst's verdict on an incident, for every alert process and the next model:
        ack and confirm revise it, false-positive closes it (amlhp.feedback topic)."""
        import getpass

        from amlhp.alerts.feedback import feedback_row, publish_feedback
        from amlhp.pipeline.incidents import find_incident

        words = {"ack": "ack", "confirm": "confirmed", "false-positive": "false_positive"}
        if verdict not in words:
            raise typer.BadParameter(
                "expected ack, confirm or false-positive", param_hint="VERDICT"
            )
        settings = settings_of(ctx)
        row = feedback_row(
            find_incident(settings, incident),
            words[verdict],
            note=note,
            analyst=analyst or getpass.getuser(),
            suppress_days=suppress_days,
        )
        publish_feedback(settings, row)
        typer.echo(json.dumps({"topic": settings.topic_feedback, **row}))

    @app.command("alerts-feedback-data")
    def feedback_data_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(..., "--out", "-o", help="Folder for the pcaps and labels.yaml"),
        benign_class: str = typer.Option(
            "benign_iot", "--benign-class", help="The class false positives' packets get"
        ),
    ) -> None:
        """The packets behind analysts' verdicts, from the raw topic, labelled for the next
        model: `amlhp train --labels ... --feedback OUT`."""
        from amlhp.alerts.feedback import training_data

        summary = training_data(settings_of(ctx), out, benign_class)
        if not summary["incidents"]:
            typer.echo("no false positive or confirmed incident with packets left", err=True)
        typer.echo(json.dumps(summary))

    @app.command("extract")
    def extract_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(..., "--out", "-o", help="The pcap to write"),
        incident: str | None = typer.Option(
            None, "--incident", help="The incident (its id on the alert topic)"
        ),
        gateway: str | None = typer.Option(None, "--gateway", "-g", help="... or a gateway"),
        host: str | None = typer.Option(None, "--host", help="... a host at either end"),
        since: str | None = typer.Option(None, "--from", help="... captured from (ISO 8601)"),
        until: str | None = typer.Option(None, "--to", help="... until (ISO 8601, inclusive)"),
    ) -> None:
        """The packets behind an incident (or a gateway's host in a time span) from the raw
        topic as a pcap: headers and the first P payload bytes, original timestamps and
        wire lengths; the snap length says where the tap cut."""
        from amlhp.alerts.exceptions import AlertsError
        from amlhp.alerts.extract import Selection, extract, incident_selection
        from amlhp.streams.replay_plan import parse_time

        settings = settings_of(ctx)
        if incident is not None:
            if any(v is not None for v in (gateway, host, since, until)):
                raise AlertsError("--incident names the gateway, host and span: give no other")
            selection = incident_selection(settings, incident)
        elif gateway is None or host is None or since is None or until is None:
            raise AlertsError("give --incident, or all of --gateway, --host, --from and --to")
        else:
            selection = Selection(gateway, host, parse_time(since), parse_time(until))
        stats = extract(settings, selection, out)
        typer.echo(json.dumps({"out": str(out), **asdict(selection), **stats.as_dict()}))


__all__ = ["register"]
