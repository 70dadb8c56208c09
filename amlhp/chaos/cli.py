"""``amlhp chaos``: the fault scenarios on the real broker, as a table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from amlhp.context import settings_of


def register(app: typer.Typer) -> None:
    """Add ``amlhp chaos`` to the root app."""

    @app.command("chaos")
    def chaos_cmd(
        ctx: typer.Context,
        scenario: list[str] = typer.Option(
            [], "--scenario", "-s", help="Scenario name (repeatable; default: all)"
        ),
        rate: int = typer.Option(1500, "--rate", help="Packets/s the tap offers"),
        seconds: float = typer.Option(30.0, "--seconds", help="Tap run per scenario"),
        capture: Path | None = typer.Option(
            None, "--capture", help="Capture the tap cycles over (default: the demo capture)"
        ),
        workdir: Path = typer.Option(
            Path("var/chaos"), "--workdir", help="Datasets and logs (relative: under the home)"
        ),
        keep: bool = typer.Option(False, "--keep", help="Keep every run's folder (failed: kept)"),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per scenario"),
        list_only: bool = typer.Option(False, "--list", help="List the scenarios and exit"),
    ) -> None:
        """Run fault scenarios (SIGKILL, rebalance, zombie, sink kill) against fixed-rate
        traffic on the configured broker, each on topics of its own, and check that the
        verdict dataset holds every packet exactly once."""
        from amlhp.chaos.exceptions import ChaosError, ScenarioSkipped
        from amlhp.chaos.run import Load, ScenarioResult, run_scenario
        from amlhp.chaos.scenarios import SCENARIOS, broker_target
        from amlhp.data import DEMO_CAPTURE

        if list_only:
            for item in SCENARIOS.values():
                typer.echo(f"{item.name:16} {item.summary}")
            return
        unknown = [s for s in scenario if s not in SCENARIOS]
        if unknown:
            raise ChaosError(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
        settings = settings_of(ctx)
        load = Load(rate=rate, seconds=seconds)
        results = []
        for name in scenario or list(SCENARIOS):
            item = SCENARIOS[name]
            try:
                target, layout = broker_target(item, settings)
            except ScenarioSkipped as exc:
                results.append(ScenarioResult(name, 0, skipped=str(exc)))
                continue
            result = run_scenario(
                name,
                item.faults,
                target,
                settings.under_home(workdir),
                item.load_for(load),
                capture or DEMO_CAPTURE,
                workers=item.workers,
                keep=keep,
                broker=layout,
                prepare=item.prepare,
                alerts=item.alerts,
                flows=item.flows,
            )
            results.append(result)
        if as_json:
            for r in results:
                typer.echo(json.dumps(r.as_dict()))
        else:
            typer.echo(
                f"{'scenario':16} {'packets':>8} {'verdicts':>8} {'dead':>5} {'missing':>7} "
                f"{'dup rows':>8} {'dup topic':>9} {'peak lag':>8} {'garbage':>7}  "
                "recovery (s)  result"
            )
            for r in results:
                verdict = "pass" if r.passed else f"FAIL {r.error or ''}".strip()
                if r.skipped is not None:
                    verdict = f"skipped: {r.skipped}"
                typer.echo(
                    f"{r.name:16} {r.packets:>8} {r.verdicts:>8} {r.dead:>5} {r.missing:>7} "
                    f"{r.duplicate_rows:>8} {r.topic_duplicates:>9} {r.peak_lag:>8} "
                    f"{f'{r.dead_messages}/{r.garbage}':>7}  "
                    f"{','.join(map(str, r.recovery_s)) or '-':12}  "
                    f"{verdict}"
                )
        if not all(r.passed for r in results):
            raise typer.Exit(1)
