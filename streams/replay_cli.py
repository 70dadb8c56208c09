"""``amlhp replay`` and ``amlhp replay-diff``: the data engineer's commands (docs/replay.md)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from amlhp.context import settings_of
from amlhp.settings import Settings


def _run_id(identity: dict[str, Any]) -> str:
    text = json.dumps(identity, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _parse_partitions(text: str | None) -> list[int] | None:
    if text is None:
        return None
    return [int(p) for p in text.split(",") if p.strip()]


def _reporter(as_json_lines: bool) -> Any:
    """Progress: a bar on a terminal, a JSON line every 5 s otherwise (on stderr)."""
    from amlhp.progress import progress_bar

    if not as_json_lines:
        bar = progress_bar()
        bar.start()
        task = bar.add_task("replay", total=None, status="")

        def on_bar(progress: Any) -> None:
            doc = progress.as_dict()
            eta = "" if doc["eta_s"] is None else f", ETA {doc['eta_s']:.0f}s"
            status = f"{doc['packets']:,} packets, {doc['rate_pps']:,.0f}/s{eta}"
            bar.update(
                task, total=doc["messages_total"], completed=doc["messages_done"], status=status
            )

        return on_bar, bar.stop
    last = [0.0]

    def on_line(progress: Any) -> None:
        if time.monotonic() - last[0] >= 5.0:
            last[0] = time.monotonic()
            typer.echo(json.dumps({"replay_progress": progress.as_dict()}), err=True)

    return on_line, lambda: None


def _scoring_threads() -> int:
    """This process's share of the cores: ``OMP_NUM_THREADS`` as :func:`_run_children` sets
    it for each of N processes, else every usable core (the native kernel's threads)."""
    import os

    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else len(os.sched_getaffinity(0))


def _run_children(settings: Settings, groups: list[list[int]], argv: list[str]) -> None:
    """One ``amlhp replay --partitions ...`` process per group; any failure is an error."""
    import os

    from amlhp.pipeline.children import child_env
    from amlhp.streams.exceptions import ReplayError

    # N scorers on this machine's cores, not N x all of them (torch's default)
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // len(groups)))
    env = child_env(settings, {**os.environ, "OMP_NUM_THREADS": threads})
    procs = []
    for group in groups:
        cmd = [sys.executable, "-m", "amlhp.cli", *argv, "--partitions",
               ",".join(map(str, group)), "--json", "--processes", "1"]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    failed = [p.args for p in procs if p.wait() != 0]
    if failed:
        raise ReplayError(f"{len(failed)} replay processes failed; run the command again")


def replay(
    settings: Settings,
    *,
    start: str,
    end: str,
    gateways: list[str],
    model: Path | None,
    sites: Path | None = None,
    out: Path,
    source: str,
    grace_s: float,
    max_rate: float | None,
    processes: int,
    partitions: list[int] | None,
    flush_packets: int = 100_000,
    dry_run: bool,
    restart: bool,
    as_json: bool,
    argv: list[str],
) -> dict[str, Any]:
    """Plan (or reuse the stored plan of an interrupted run), run and summarise."""
    from amlhp.pipeline.access import check_access
    from amlhp.pipeline.signals import install_stop_signals
    from amlhp.streams.exceptions import ReplayError
    from amlhp.streams.replay import (
        Replayer,
        finished_summary,
        identity,
        prepare_output,
        read_run_manifest,
        split_partitions,
        write_run_manifest,
    )
    from amlhp.streams.replay_plan import ReplayPlan, Window, iso_ns, parse_time, plan_replay

    if source not in ("raw", "verdicts"):
        raise ReplayError(f"--source is raw or verdicts, not {source!r}")
    check_access(settings, "replay")
    window = Window(parse_time(start), parse_time(end), tuple(sorted(set(gateways))))
    topic = settings.topic_raw if source == "raw" else settings.topic_verdicts
    scorer = None
    model_info = None
    if source == "raw":
        from amlhp.model.scorer import default_model_path, load_scorer

        path = model or default_model_path()
        scorer = load_scorer(path, sites=sites or settings.sites_dir, workers=_scoring_threads())
        model_info = {"path": str(path), "version": scorer.version,
                      "sha256": scorer.artifact.meta["sha256"]}  # fmt: skip
        if scorer.sites:  # learnt sites judge their gateways: part of what the run is
            model_info["sites"] = scorer.sites.versions

    def replayer(plan: ReplayPlan, run_id: str, only: list[int] | None) -> Replayer:
        return Replayer(settings, plan, out, scorer=scorer, run_id=run_id, partitions=only,
                        max_rate=max_rate, roll_packets=flush_packets)  # fmt: skip

    stop = threading.Event()
    install_stop_signals(stop)
    if partitions is not None:  # one process of a --processes N run: the plan is stored
        body = read_run_manifest(out)
        if body is None:
            raise ReplayError(f"{out} holds no run manifest for --partitions")
        plan = ReplayPlan.from_dict(body["plan"])
        replayer(plan, body["run_id"], partitions).run(stop)
        return {"partitions": partitions, "stopped": stop.is_set()}

    existing = None if dry_run else prepare_output(out, restart=restart)
    if existing is None and dry_run and not restart:
        existing = read_run_manifest(out)
    if existing is not None:
        plan = ReplayPlan.from_dict(existing["plan"])
        wanted = identity(ReplayPlan(topic, source, window, grace_s, (), 0, 0), model_info)
        if existing["identity"] != wanted:
            raise ReplayError(
                f"{out} holds another replay ({existing['identity']}); "
                "use --restart to replace it or another --out"
            )
        if existing.get("status") == "finished" and not dry_run:
            return {**existing, "already_finished": True}
        body = existing
    else:
        plan = plan_replay(settings, topic, source, window, grace_s=grace_s)
        ident = identity(plan, model_info)
        body = {
            "run_id": _run_id(ident),
            "identity": ident,
            "status": "running",
            "started_at": iso_ns(time.time_ns()),
            "plan": plan.as_dict(),
            "model": model_info,
        }
    if dry_run:
        return {"dry_run": True, **plan.as_dict()}
    write_run_manifest(out, body)
    ids = [r.partition for r in plan.partitions if r.messages]
    if processes > 1 and len(ids) > 1:
        _run_children(settings, split_partitions(ids, processes), argv)
    else:
        on_progress, done = _reporter(as_json or not sys.stderr.isatty())
        try:
            replayer(plan, body["run_id"], None).run(stop, on_progress)
        finally:
            done()
    if stop.is_set():
        raise ReplayError("replay stopped before its end; run the same command to continue")
    summary = finished_summary(out, body)
    write_run_manifest(out, summary)
    return summary


def register(app: typer.Typer) -> None:
    """Add ``replay`` and ``replay-diff`` to the root app."""

    @app.command("replay")
    def replay_cmd(
        ctx: typer.Context,
        start: str = typer.Option(..., "--from", help="Window start, capture time (ISO, UTC)"),
        end: str = typer.Option(..., "--to", help="Window end, exclusive (ISO, UTC)"),
        gateway: list[str] = typer.Option([], "--gateway", "-g", help="Only these gateways"),
        model: Path | None = typer.Option(None, "--model", help="Model (default: bundled)"),
        sites: Path | None = typer.Option(
            None,
            "--sites",
            help="Learnt sites (amlhp model adapt) judging their gateways (default: "
            "AMLHP_SITES_DIR)",
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Dataset folder of this replay"),
        source: str = typer.Option(
            "raw", "--source", help="raw: re-score packets; verdicts: re-export verdicts"
        ),
        grace_s: float = typer.Option(
            300.0, "--grace", min=0, help="Capture -> publish delay tolerated (s)"
        ),
        max_rate: float | None = typer.Option(
            None, "--max-rate", min=1, help="At most this many packets per second"
        ),
        processes: int = typer.Option(1, "--processes", min=1, help="Local processes"),
        flush_packets: int = typer.Option(
            100_000, "--flush-packets", min=1, help="Packets per partition per durable flush"
        ),
        partitions: str | None = typer.Option(None, "--partitions", hidden=True),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, read nothing"),
        restart: bool = typer.Option(False, "--restart", help="Start over in --out"),
        as_json: bool = typer.Option(False, "--json", help="JSON summary and progress lines"),
    ) -> None:
        """Replay a capture-time window of the raw topic, re-scored with a model, into a
        dataset of its own (or re-export the verdict topic); resumable, never touches the
        live consumer groups."""
        argv = [a for a in sys.argv[1:] if a not in ("--restart",)]
        summary = replay(
            settings_of(ctx), start=start, end=end, gateways=gateway, model=model,
            sites=sites, out=out, source=source, grace_s=grace_s, max_rate=max_rate,
            processes=processes, partitions=_parse_partitions(partitions),
            flush_packets=flush_packets,
            dry_run=dry_run, restart=restart, as_json=as_json, argv=argv,
        )  # fmt: skip
        if as_json or partitions is not None:
            typer.echo(json.dumps(summary, sort_keys=True))
            return
        _print_summary(summary)

    @app.command("replay-diff")
    def replay_diff_cmd(
        a: Path = typer.Argument(..., help="A verdict dataset (a replay's --out, out/verdicts)"),
        b: Path = typer.Argument(..., help="Another one"),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON"),
    ) -> None:
        """How two datasets' verdicts of the same packets differ (per-class confusion)."""
        from amlhp.streams.replay_diff import diff_datasets, print_diff

        result = diff_datasets(a, b)
        if as_json:
            typer.echo(json.dumps(result, sort_keys=True))
            return
        print_diff(result)


def _print_summary(summary: dict[str, Any]) -> None:
    if summary.get("dry_run"):
        typer.echo(f"{summary['topic']}: {summary['messages']:,} messages, about "
                   f"{summary['estimated_packets']:,} packets")  # fmt: skip
        for p in summary["partitions"]:
            typer.echo(f"  partition {p['partition']}: offsets {p['start']}-{p['end']}")
        return
    totals = summary.get("totals", {})
    typer.echo(
        f"replay {summary['status']}: {totals.get('packets', 0):,} packets in the window, "
        f"{totals.get('verdicts', 0):,} verdicts, {totals.get('dead_letters', 0):,} dead "
        f"letters -> {summary['plan']['topic']}"
    )
