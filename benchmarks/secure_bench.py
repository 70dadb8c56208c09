"""End-to-end capacity under TLS + SASL beside plaintext, in the same run.

What security costs the pipeline: the encryption of every byte between tap, broker,
worker and sink (TLS on four connections a packet crosses), and SCRAM logins when the
clients connect. The same full-speed capacity run of ``amlhp bench e2e`` (a tap at full
speed over the capture, drained and exactly accounted) runs on the local plaintext broker
and on the secured one (``amlhp infra kafka up --secure``), alternating, ``rounds`` times
each, so that a slow minute of a shared machine does not land on one side only. The
secured side runs as the admin principal: each run makes and deletes topics of its own,
which the stage principals may not (their ACLs are exercised by the secured pipeline
test, not here).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from amlhp.benchmarks.e2e import E2EConfig, alternate, capacity, median_pps
from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import StatusFn, quiet
from amlhp.settings import Settings

#: the issue's goal: capacity under TLS + SASL within 15% of plaintext
GOAL_RATIO = 0.85


def run_secure_bench(
    plain: Settings,
    secure: Settings,
    cfg: E2EConfig,
    *,
    rounds: int = 2,
    work_dir: Path = Path("out/bench"),
    on_status: StatusFn = quiet,
) -> dict[str, Any]:
    """Alternate capacity runs on both brokers; the medians, their ratio and the goal."""

    def on(settings: Settings) -> Callable[[str], dict[str, Any]]:
        return lambda name: capacity(settings, cfg, work_dir, name, on_status)

    runs = alternate({"plaintext": on(plain), "tls_sasl": on(secure)}, rounds, on_status)
    medians = median_pps(runs)
    ratio = medians["tls_sasl"] / medians["plaintext"] if medians["plaintext"] else None
    return {
        "kind": "secure",
        "what": "end-to-end capacity (tap, broker, worker, sink on this machine), plaintext "
        "vs TLS + SASL/SCRAM-SHA-512, full speed over the capture, alternating rounds",
        "capture": str(cfg.capture),
        "capacity_loops": cfg.capacity_loops,
        "rounds": rounds,
        "machine": machine_facts(),
        "runs": runs,
        "median_pps": {m: round(v, 1) for m, v in medians.items()},
        "ratio": round(ratio, 3) if ratio is not None else None,
        "goal_ratio": GOAL_RATIO,
        "goal_met": ratio is not None and ratio >= GOAL_RATIO,
        "exact": all(r["exact"] for rs in runs.values() for r in rs),
    }


def secure_table(doc: dict[str, Any]) -> str:
    """The result as a Markdown table (docs/benchmarks.md)."""
    lines = [
        "| broker | capacity (packets/s, median) | runs | exact accounting |",
        "| --- | ---: | ---: | --- |",
    ]
    for mode, label in (("plaintext", "plaintext"), ("tls_sasl", "TLS + SASL/SCRAM-SHA-512")):
        runs = doc["runs"][mode]
        exact = "yes" if all(r["exact"] for r in runs) else "NO"
        each = ", ".join(f"{r['achieved_pps']:,.0f}" for r in runs)
        lines.append(
            f"| {label} | {doc['median_pps'][mode]:,.0f} ({each}) | {len(runs)} | {exact} |"
        )
    met = "met" if doc["goal_met"] else "NOT met"
    lines.append("")
    lines.append(
        f"TLS + SASL / plaintext = {doc['ratio']} (goal at least {doc['goal_ratio']}: {met})"
    )
    return "\n".join(lines)


def register(bench: typer.Typer) -> None:
    """``amlhp bench secure`` (the bench CLI module is at its size limit)."""
    from amlhp.context import settings_of

    @bench.command("secure")
    def secure_cmd(
        ctx: typer.Context,
        rounds: int = typer.Option(2, "--rounds", min=1, help="Capacity runs per broker"),
        capacity_loops: int = typer.Option(
            3, "--capacity-loops", min=1, help="Passes over the capture in each run"
        ),
        out: Path = typer.Option(
            Path("benchmarks/results/secure.json"), "--out", "-o", help="Result JSON"
        ),
        work_dir: Path = typer.Option(Path("out/bench"), "--work-dir", help="Logs, datasets"),
    ) -> None:
        """End-to-end capacity under TLS + SASL beside plaintext, alternating runs.

        Needs both local brokers: `amlhp infra kafka up` and `amlhp infra kafka up --secure`.
        """
        from amlhp.benchmarks.exceptions import BenchmarksError
        from amlhp.benchmarks.results import write_json
        from amlhp.infra import kafka_broker
        from amlhp.infra.kafka_config import principal_settings, secure_single_layout, single_layout
        from amlhp.infra.paths import default_paths

        settings = settings_of(ctx)
        paths = default_paths(settings.home)
        plain_layout, secure_layout = single_layout(paths), secure_single_layout(paths)
        for layout in (plain_layout, secure_layout):
            if any(kafka_broker.node_pid(n) is None for n in layout.nodes):
                flag = " --secure" if layout.security else ""
                raise BenchmarksError(f"start {layout.name} first: amlhp infra kafka up{flag}")
        plain = settings.model_copy(
            update={"bootstrap_servers": plain_layout.bootstrap_servers, "rdkafka": {}}
        )
        secure = principal_settings(settings, secure_layout, "admin")
        cfg = E2EConfig(capacity_loops=capacity_loops)
        doc = run_secure_bench(
            plain, secure, cfg, rounds=rounds, work_dir=work_dir,
            on_status=lambda text: typer.echo(text, err=True),
        )  # fmt: skip
        write_json(doc, out)
        typer.echo(secure_table(doc))
