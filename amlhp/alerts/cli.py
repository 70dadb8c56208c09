"""``amlhp alerts`` (offline), ``alerts-stage``, ``alerts-sink``, ``alerts-evaluate``
(``alerts-export``, ``extract``: :mod:`amlhp.alerts.siem_cli`) and
``amlhp explain`` (packets, or the flows and packets behind an incident)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import typer

from amlhp.context import settings_of
from amlhp.streams.pipeline_cli import add_sink_command, metrics_option, start_metrics


def register(app: typer.Typer) -> None:
    """Add the alert commands to the root app (and ``bench alerts`` to the ``bench``
    sub-app the benchmarks registered before: the benchmark layer cannot import this
    stage)."""
    bench = next((g.typer_instance for g in app.registered_groups if g.name == "bench"), None)
    if bench is not None:
        _register_bench(bench)
    from amlhp.alerts import siem_cli

    siem_cli.register(app)

    @app.command("alerts")
    def alerts_cmd(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(
            ..., help="pcap/pcapng files or folders (-: standard input)"
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact (default: bundled)"
        ),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per incident"),
        fmt: str | None = typer.Option(
            None,
            "--format",
            "-f",
            help="One record per incident line: json, ecs (Elastic Common Schema), eve "
            "(Suricata EVE alert) or cef (ArcSight CEF, for syslog)",
        ),
        gateway: str = typer.Option("offline", "--gateway", "-g", help="Gateway id of the input"),
        sites: Path | None = typer.Option(
            None, "--sites", help="Learnt sites judging their gateways (default: AMLHP_SITES_DIR)"
        ),
        per_file: bool = typer.Option(
            False, "--per-file", help="Each file is its own gateway (named after the file)"
        ),
        devices: bool = typer.Option(
            True,
            "--devices/--no-devices",
            help="Flow context: name each incident's device from the flow model's inventory "
            "of the input, and take the attack flow model's verdicts as evidence",
        ),
        flow_model: Path | None = typer.Option(
            None, "--flow-model", help="Flow model of the inventory (default: bundled)"
        ),
        attack_model: str | None = typer.Option(
            None,
            "--attack-model",
            help="Attack flow model whose verdicts are evidence (default: bundled; none: off)",
        ),
        suppress: Path | None = typer.Option(
            None,
            "--suppress",
            help="Allow-list (YAML) marking the incidents it covers (default: "
            "AMLHP_ALERT_SUPPRESSIONS)",
        ),
    ) -> None:
        """The incidents the alert stage would raise on these captures (same code as the
        stream; thresholds from the AMLHP_ALERT_* settings). With the device inventory of
        the whole input, as the stream's incidents have it once the flow worker has seen
        their hosts' flows."""
        from amlhp.alerts.export import FORMATS, formatter
        from amlhp.alerts.offline import alerts_from_captures
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.alerts.suppression import Suppressions
        from amlhp.model.scorer import default_model_path, load_scorer
        from amlhp.pipeline.incidents import incident_json, print_incidents
        from amlhp.stdio import captures_with_stdin

        if fmt is not None and fmt not in FORMATS:
            raise typer.BadParameter(f"expected one of {', '.join(FORMATS)}", param_hint="--format")
        line = formatter(fmt or "json") if (as_json or fmt) else None
        settings = settings_of(ctx)
        rules = Suppressions.load(suppress or settings.alert_suppressions)
        scorer = load_scorer(model or default_model_path(), sites=sites or settings.sites_dir)
        with captures_with_stdin(captures) as paths:
            known, flows = None, None
            if devices:
                from amlhp.flows.artifact import DEFAULT_MODEL
                from amlhp.flows.inventory_cli import flows_of_captures, inventory_of_flows
                from amlhp.pipeline.devices import identities

                flows, version = flows_of_captures(
                    paths, flow_model or DEFAULT_MODEL, gateway, per_file, attack_model
                )
                known = identities(inventory_of_flows(flows, version).to_pylist())
            run = alerts_from_captures(
                paths,
                scorer,
                AlertPolicy.from_settings(settings),
                gateway=gateway,
                per_file=per_file,
                devices=known,
                suppressions=rules,
                flows=flows,
            )
        rules.report_unmatched()
        if line is not None:
            for row in run.incidents:
                typer.echo(line(incident_json(row)))
            return
        print_incidents(run.incidents, title=f"{len(run.incidents)} incidents")
        summary: dict[str, Any] = {"packets": run.packets, "incidents": len(run.incidents)}
        if rules.rules:
            summary["suppressed"] = sum(1 for r in run.incidents if r.get("suppressed_by"))
            summary["rule_rows"] = dict(rules.matched)
            summary["rules_never_matched"] = rules.unmatched()
        typer.echo(json.dumps(summary))

    @app.command("explain")
    def explain_cmd(
        ctx: typer.Context,
        capture: Path = typer.Argument(..., help="A capture file"),
        incident: str | None = typer.Option(
            None, "--incident", help="Explain this incident (its id) of the capture instead"
        ),
        gateway: str = typer.Option(
            "offline", "--gateway", "-g", help="Gateway id the incident's packets came from"
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Packet model artifact (default: the bundled one)"
        ),
        flow_model: Path | None = typer.Option(
            None, "--flow-model", help="Flow model (default: the bundled one)"
        ),
        max_packets: int = typer.Option(20, "--max-packets", help="Packets to explain"),
        max_flows: int = typer.Option(10, "--max-flows", help="Flows of an incident to explain"),
        samples: int = typer.Option(
            16, "--samples", help="Permutations per packet (Shapley value sampling)"
        ),
        png: Path | None = typer.Option(None, "--png", help="Picture of the explanation"),
        as_json: bool = typer.Option(False, "--json", help="An incident's explanation as JSON"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """Per-packet explanations of IoT-AMLHP verdicts over named header fields + payload,
        or with --incident the flows and sampled packets behind one incident.

        Without --incident: one JSON line per explained packet (verdict, probability and the
        Shapley value of each field the packet has; fields it lacks get exactly 0). With
        --incident ID: the incident as `amlhp alerts` finds it in the capture (ids are the
        stream's), its host's flows during it with their group Shapley values, and its
        sample packets explained; as text, or --json; --png draws both.
        """
        from amlhp.model.packet_explain import explain_capture, plot_packet_explanation

        if incident is None:
            docs = explain_capture(
                capture, model, max_packets=max_packets, samples=samples, seed=seed
            )
            for doc in docs:
                typer.echo(json.dumps(doc))  # attributions stay ranked by magnitude
            if png is not None and docs:
                plot_packet_explanation(docs[0], png)
            return
        from amlhp.alerts.explain import explain_incident, explanation_text, plot_explanation

        explained = explain_incident(
            capture,
            incident,
            gateway=gateway,
            settings=settings_of(ctx),
            packet_model=model,
            flow_model=flow_model,
            max_flows=max_flows,
            max_packets=max_packets,
            samples=samples,
        )
        if png is not None:
            plot_explanation(explained, png)
        if as_json:
            typer.echo(json.dumps(explained, sort_keys=True, default=str))
        else:
            for line in explanation_text(explained):
                typer.echo(line)

    @app.command("alerts-stage")
    def alerts_stage_cmd(
        ctx: typer.Context,
        app_id: str | None = typer.Option(
            None, "--group", "--app-id", help="Consumer group (the Faust app id)"
        ),
        metrics_port: int = metrics_option(),
    ) -> None:
        """Run the alert stage: verdicts -> incidents on the alert topic (Faust)."""
        from amlhp.alerts.stage import AlertStageOptions, run_alert_stage
        from amlhp.pipeline.access import check_access
        from amlhp.pipeline.children import log_settings

        settings = settings_of(ctx)
        log_settings("alerts", settings)
        check_access(settings, "alerts", group=app_id)
        start_metrics(
            "alerts",
            metrics_port,
            settings,
            lag_group=app_id or f"{settings.consumer_group}-alerts",
            lag_topics=[settings.topic_verdicts],
        )
        run_alert_stage(settings, AlertStageOptions(app_id=app_id))

    def alert_sink() -> Any:
        from amlhp.alerts.sink import AlertSink

        return AlertSink

    add_sink_command(
        app,
        "alerts-sink",
        "alert-sink",
        alert_sink,
        out=Path("out/alerts"),
        roll_rows=50_000,
        metrics_port=0,
        doc="Write the alert topic to a hive-partitioned Parquet dataset (exactly once per file).",
    )

    @app.command("alerts-evaluate")
    def alerts_evaluate_cmd(
        ctx: typer.Context,
        public: Path = typer.Option(
            Path("../shared/data/public"), "--public", help="Folder of the public captures"
        ),
        out: Path = typer.Option(
            Path("model/results/alerts"), "--out", "-o", help="Folder of alerts.json and alerts.md"
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact (default: bundled)"
        ),
        cache: Path | None = typer.Option(
            None, "--cache", help="Keep the scored captures here between runs (Arrow IPC)"
        ),
        workers: int = typer.Option(2, "--workers", help="Processes running the candidates"),
    ) -> None:
        """The incident figures, thresholds fitted leaving one source out: lab scenarios,
        false incidents per device-hour on the benign captures, detection and time to
        alert on the attack captures (each measured with thresholds it did not tune)."""
        from amlhp.alerts.evaluate import load_corpus
        from amlhp.alerts.fitting import leave_one_source_out, load_cached_corpus, save_corpus
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.alerts.report import write_results
        from amlhp.data import DEMO_CAPTURE
        from amlhp.model.scorer import default_model_path, load_scorer

        settings = settings_of(ctx)
        base = AlertPolicy.from_settings(settings)
        scorer = load_scorer(model or default_model_path())
        corpus = load_cached_corpus(cache, scorer.version) if cache else None
        if corpus is None:
            corpus = load_corpus(scorer, DEMO_CAPTURE, public)
            if cache:
                save_corpus(corpus, cache)
        fit = leave_one_source_out(corpus, base, workers=workers)
        written = write_results(fit, base, settings.under_home(out))
        typer.echo(json.dumps({"written": [str(p) for p in written]}))

    @app.command("alerts-lab")
    def alerts_lab_cmd(
        ctx: typer.Context,
        run_dir: Path = typer.Argument(..., help="A lab run folder (amlhp lab slow's output)"),
        out: Path = typer.Option(
            Path("model/results/alerts/lab-slow.json"), "--out", "-o", help="Result JSON"
        ),
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact (default: bundled)"
        ),
        attack_model: str | None = typer.Option(
            None,
            "--attack-model",
            help="Attack flow model whose verdicts are evidence too (one that never saw "
            "the run: a fold of amlhp flows loso --save-models; default: none)",
        ),
    ) -> None:
        """Incidents on a recorded lab run: per scenario, an incident of its kind naming its
        address and the time to it; benign hosts' incidents per device-hour."""
        from amlhp.alerts.lab_run import lab_run_figures, lab_run_table
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.model.scorer import default_model_path, load_scorer

        settings = settings_of(ctx)
        scorer = load_scorer(model or default_model_path())
        doc = lab_run_figures(run_dir, scorer, AlertPolicy.from_settings(settings), attack_model)
        path = settings.under_home(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        path.with_suffix(".md").write_text(lab_run_table(doc) + "\n")
        typer.echo(lab_run_table(doc))


def _register_bench(bench: typer.Typer) -> None:
    @bench.command("alerts")
    def bench_alerts(
        ctx: typer.Context,
        copies: int = typer.Option(4, "--copies", min=1, help="Gateways replaying the demo"),
        batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Verdicts per batch"),
        out: Path = typer.Option(
            Path("benchmarks/results/alerts.json"), "--out", "-o", help="Result JSON"
        ),
    ) -> None:
        """The alert engine's verdicts/s on one core and its state per tracked host."""
        from amlhp.alerts.bench import run_alert_bench
        from amlhp.alerts.offline import scored_captures
        from amlhp.alerts.policy import AlertPolicy
        from amlhp.data import DEMO_CAPTURE
        from amlhp.model.scorer import default_model_path, load_scorer

        settings = settings_of(ctx)
        scorer = load_scorer(default_model_path())
        batches = [b for _, part in scored_captures([DEMO_CAPTURE], scorer) for b in part]
        doc = run_alert_bench(batches, copies, batch_size, AlertPolicy.from_settings(settings))
        doc["machine"] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
        path = settings.under_home(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
        typer.echo(json.dumps(doc))
