"""``amlhp infra ...``: fetch, start, inspect and stop the local Kafka and Prometheus."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated

import typer

from amlhp.context import settings_of

if TYPE_CHECKING:
    from amlhp.infra.kafka_config import KafkaLayout
    from amlhp.infra.paths import InfraPaths

_CLUSTER_HELP = "The 3-broker cluster (ports 19092-19094) instead of the single broker"
Cluster = Annotated[bool, typer.Option("--cluster", help=_CLUSTER_HELP)]
_SECURE_HELP = (
    "The secured twin (TLS, SASL/SCRAM-SHA-512, ACLs; ports 9392 or 39092-39094): "
    "see docs/infra.md#secured-cluster"
)
Secure = Annotated[bool, typer.Option("--secure", help=_SECURE_HELP)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _paths(ctx: typer.Context) -> InfraPaths:
    """The folders under the settings' home (``AMLHP_HOME``, default: the working directory)."""
    from amlhp.infra.paths import default_paths

    return default_paths(settings_of(ctx).home)


def _kafka_layout(
    ctx: typer.Context, cluster: bool, secure: bool = False
) -> tuple[InfraPaths, KafkaLayout]:
    """The folders and the layout (single broker or 3-broker cluster) a command acts on."""
    from amlhp.infra.kafka_config import layout_for

    paths = _paths(ctx)
    return paths, layout_for(paths, cluster=cluster, secure=secure)


def parse_principals(flags: list[str]) -> dict[str, str]:
    """``--principal STAGE=NAME`` flags as a mapping (a usage error when malformed)."""
    out: dict[str, str] = {}
    for flag in flags:
        stage, sep, name = flag.partition("=")
        if not sep or not stage or not name:
            raise typer.BadParameter(f"expected STAGE=NAME, got {flag!r}", param_hint="--principal")
        out[stage] = name
    return out


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""
    infra = typer.Typer(
        help="Local infrastructure: Apache Kafka (KRaft) and Prometheus.", no_args_is_help=True
    )
    kafka = typer.Typer(
        help="The local Apache Kafka broker or 3-broker cluster.", no_args_is_help=True
    )
    prom = typer.Typer(help="The local Prometheus server on 127.0.0.1:9090.", no_args_is_help=True)
    infra.add_typer(kafka, name="kafka")
    infra.add_typer(prom, name="prometheus")
    app.add_typer(infra, name="infra")

    @infra.command("fetch")
    def fetch(
        ctx: typer.Context,
        force: bool = typer.Option(False, "--force", help="Copy the jars again even if cached"),
        no_prometheus: bool = typer.Option(
            False, "--no-prometheus", help="Do not try to install Prometheus"
        ),
    ) -> None:
        """Fetch Kafka's jars with Maven (cached) and install Prometheus if missing."""
        from amlhp.infra.fetch import ensure_prometheus, fetch_kafka
        from amlhp.infra.status_line import live_status

        with live_status("fetching Apache Kafka jars from Maven Central"):
            result = fetch_kafka(_paths(ctx), force=force)
        verb = "fetched" if result.downloaded else "cached"
        _err(f"Kafka {result.version}: {result.jars} jars {verb} in {result.libs}")
        if not no_prometheus:
            with live_status("looking for Prometheus (apt-get install prometheus if missing)"):
                prom_result = ensure_prometheus()
            _err(("" if prom_result.binary else "warning: ") + prom_result.message)
        typer.echo(str(result.libs))

    @kafka.command("up")
    def kafka_up(
        ctx: typer.Context,
        cluster: Cluster = False,
        secure: Secure = False,
        as_json: AsJson = False,
    ) -> None:
        """Start the broker(s) unless running and wait until they answer; prints bootstrap.

        With ``--secure`` the principals' settings are files under the layout's
        ``security/credentials/`` (printed on stderr); ``amlhp topics create --acls`` with
        the admin's file applies the stages' ACLs."""
        from amlhp.infra import kafka_broker
        from amlhp.infra.status_line import live_status

        paths, layout = _kafka_layout(ctx, cluster, secure)
        with live_status(f"Kafka {layout.name}: starting") as on_status:
            result = kafka_broker.up(layout, paths=paths, on_status=on_status)
        if result.external:
            _err(f"Kafka already answers on {result.bootstrap_servers} (not started by amlhp)")
        elif result.started:
            _err(f"Kafka {layout.name}: started nodes {result.started} in {result.seconds:.1f}s")
        else:
            _err(f"Kafka {layout.name}: already running (nodes {result.already_running})")
        if layout.security is not None:
            _err(f"principals' settings (mode 0600): {layout.security.credentials}/<stage>.env")
        typer.echo(json.dumps(asdict(result)) if as_json else result.bootstrap_servers)

    @kafka.command("down")
    def kafka_down(
        ctx: typer.Context,
        cluster: Cluster = False,
        secure: Secure = False,
        purge: bool = typer.Option(False, "--purge", help="Also delete the data and logs"),
    ) -> None:
        """Stop the broker(s): SIGTERM, wait, SIGKILL after 30 s."""
        from amlhp.infra import kafka_broker
        from amlhp.infra.status_line import live_status

        _, layout = _kafka_layout(ctx, cluster, secure)
        with live_status(f"Kafka {layout.name}: stopping"):
            result = kafka_broker.down(layout, purge=purge)
        if not result.stopped:
            _err(f"Kafka {layout.name}: not running")
        else:
            killed = f" (killed {result.killed})" if result.killed else ""
            _err(f"Kafka {layout.name}: stopped nodes {result.stopped}{killed}")

    @kafka.command("status")
    def kafka_status(
        ctx: typer.Context,
        as_json: AsJson = False,
    ) -> None:
        """Show every node of the single broker and the cluster; exit 1 when none runs."""
        from amlhp.infra import kafka_broker
        from amlhp.infra.kafka_config import all_layouts

        rows = []
        for layout in all_layouts(_paths(ctx)):
            for node in kafka_broker.status(layout):
                rows.append({"layout": layout.name, **asdict(node), "state": node.state})
        if as_json:
            typer.echo(json.dumps(rows))
        else:
            for row in rows:
                pid = row["pid"] if row["pid"] is not None else "-"
                typer.echo(
                    f"{row['layout']:<14} node-{row['node_id']}  127.0.0.1:{row['port']:<6} "
                    f"{row['state']:<8} pid={pid}"
                )
        if not any(row["state"] in {"running", "foreign"} for row in rows):
            raise typer.Exit(1)

    @kafka.command("acls")
    def kafka_acls(
        ctx: typer.Context,
        principal: list[str] = typer.Option(
            [], "--principal", help="STAGE=NAME: another principal for a stage (repeatable)"
        ),
        as_json: AsJson = False,
    ) -> None:
        """Print the ACLs each stage's principal needs (least privilege), from the settings'
        topic names and consumer group; `amlhp topics create --acls` applies them."""
        from amlhp.infra.kafka_acls import acl_dicts, acl_table, stage_acls

        rows = stage_acls(settings_of(ctx), parse_principals(principal))
        typer.echo(json.dumps(acl_dicts(rows)) if as_json else acl_table(rows))

    @prom.command("up")
    def prometheus_up(ctx: typer.Context) -> None:
        """Start Prometheus (data in var/prometheus) unless running; prints its URL.

        It scrapes the stages as their metrics settings serve: HTTPS when
        AMLHP_METRICS_TLS_CERT is set (trusting AMLHP_METRICS_TLS_CA), basic
        authentication when AMLHP_METRICS_USER is."""
        from amlhp.infra import prometheus_server
        from amlhp.infra.status_line import live_status

        settings = settings_of(ctx)
        password = settings.metrics_password
        layout = prometheus_server.with_scrape_security(
            prometheus_server.prometheus_layout(_paths(ctx)),
            https=settings.metrics_tls_cert is not None,
            ca_file=settings.metrics_tls_ca,
            username=settings.metrics_user,
            password=password.get_secret_value() if password is not None else None,
        )
        with live_status("Prometheus: starting") as on_status:
            started = prometheus_server.up(layout, on_status=on_status)
        _err("Prometheus: started" if started else "Prometheus: already running")
        typer.echo(layout.url)

    @prom.command("down")
    def prometheus_down(
        ctx: typer.Context,
        purge: bool = typer.Option(False, "--purge", help="Also delete its data"),
    ) -> None:
        """Stop Prometheus."""
        from amlhp.infra import prometheus_server

        layout = prometheus_server.prometheus_layout(_paths(ctx))
        stopped = prometheus_server.down(layout, purge=purge)
        _err("Prometheus: stopped" if stopped else "Prometheus: not running")
