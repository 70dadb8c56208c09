"""``amlhp tap``, ``amlhp worker`` and ``amlhp sink``: one process per pipeline stage."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from amlhp.context import settings_of
from amlhp.metrics.stage_cli import metrics_option, start_metrics
from amlhp.progress import console


def _settings(ctx: typer.Context, stage: str, group: str | None = None):  # type: ignore[no-untyped-def]
    """The command's settings, logged (secrets masked) so the stage's log shows them, and
    its access to a secured cluster checked (``group``: its consumer group if not the
    default)."""
    from amlhp.pipeline.access import check_access
    from amlhp.pipeline.children import log_settings

    settings = settings_of(ctx)
    log_settings(stage, settings)
    check_access(settings, stage, group=group)
    return settings


def add_sink_command(
    app: typer.Typer,
    name: str,
    process: str,
    sink_class: Callable[[], Any],
    *,
    out: Path,
    roll_rows: int,
    metrics_port: int,
    doc: str,
) -> None:
    """Add a command that runs a Parquet sink of the shared core (``amlhp sink`` for the
    verdicts, ``amlhp alerts-sink`` for the alerts); they differ only in the sink class,
    loaded by ``sink_class`` when the command runs, and in their defaults."""

    @app.command(name, help=doc)
    def sink_cmd(
        ctx: typer.Context,
        out: Path = typer.Option(
            out, "--out", "-o", help="Dataset root (relative: under the home)"
        ),
        roll_rows: int = typer.Option(roll_rows, "--roll-rows", help="Rows per file at most"),
        roll_seconds: float = typer.Option(5.0, "--roll-seconds", help="Seconds per file at most"),
        group: str | None = typer.Option(None, "--group", "--app-id", help="Consumer group"),
        metrics_port: int = metrics_option(metrics_port),
    ) -> None:
        _run_sink(ctx, sink_class(), process, out, group, roll_rows, roll_seconds, metrics_port)


def _run_sink(
    ctx: typer.Context,
    sink_class: Any,
    process: str,
    out: Path,
    group: str | None,
    roll_rows: int,
    roll_seconds: float,
    metrics_port: int,
) -> None:
    """Run a Parquet sink until SIGTERM/SIGINT, with its metrics and lag collector; prints
    its counters as one JSON line."""
    from amlhp.pipeline.parquet_sink import SinkStats
    from amlhp.pipeline.signals import install_stop_signals

    settings = _settings(ctx, process, group)
    stop = threading.Event()
    install_stop_signals(stop)
    served = start_metrics(
        process,
        metrics_port,
        settings,
        lag_group=group or f"{settings.consumer_group}-{sink_class.group_suffix}",
        lag_topics=[getattr(settings, sink_class.topic_setting)],
    )
    sink = sink_class(
        settings,
        settings.under_home(out),
        group_id=group,
        roll_rows=roll_rows,
        roll_seconds=roll_seconds,
    )
    with console().status(f"{process} starting") as status:

        def progress(stats: SinkStats) -> None:
            status.update(
                f"{process}: {stats.rows} rows in {stats.files} files, {stats.messages} messages"
            )

        stats = sink.run(stop, on_progress=progress)
    served.close()
    typer.echo(json.dumps(stats.as_dict()))


def register(app: typer.Typer) -> None:
    """Add the stage commands to the root app."""

    @app.command("tap")
    def tap_cmd(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(None, help="pcap/pcapng files to replay"),
        gateway: str = typer.Option(..., "--gateway", "-g", help="Gateway id (Kafka key)"),
        gateways: int = typer.Option(
            1,
            "--gateways",
            min=1,
            help="Publish as this many gateways <gateway>-<i>, each every N-th packet with "
            "its own sequence numbers and batches (fleet benchmarks; file replays only)",
        ),
        interface: str | None = typer.Option(None, "--interface", "-i", help="Live capture"),
        pace: float | None = typer.Option(
            None, "--pace", help="Replay at the original pace x this factor (default: max speed)"
        ),
        loops: int = typer.Option(1, "--loop", help="Replay the files this many times"),
        rate: float | None = typer.Option(
            None,
            "--rate",
            help="Offer this many packets/s (token bucket), cycling over the captures; "
            "stops after --duration seconds or --loop passes",
        ),
        duration_s: float | None = typer.Option(
            None, "--duration", help="With --rate: offer rate x duration packets in all"
        ),
        keep_timestamps: bool = typer.Option(
            False, "--keep-timestamps", help="Keep capture timestamps instead of re-stamping"
        ),
        batch_size: int = typer.Option(500, "--batch-size", help="Max packets per message"),
        max_delay_ms: float = typer.Option(50.0, "--max-delay-ms", help="Max batching delay"),
        start_seq: int | None = typer.Option(
            None,
            "--start-seq",
            help="First sequence number (default: 0, or where the last run of this gateway "
            "ended when a state folder is used)",
        ),
        state_dir: Path | None = typer.Option(
            None,
            "--state-dir",
            help="Keep the gateway's sequence numbers across restarts in this folder "
            "(default with -i: var/tap under the home; file replays: none)",
        ),
        max_packets: int | None = typer.Option(None, "--max-packets", help="Stop after N (live)"),
        metrics_port: int = metrics_option(),
        linger_s: float = typer.Option(
            0.0,
            "--linger",
            help="After the replay, keep serving metrics up to this many seconds (until "
            "SIGTERM) so that Prometheus scrapes the final counts",
        ),
    ) -> None:
        """Publish captured packets (file replay or live interface) to the raw topic."""
        from amlhp.pipeline.signals import install_stop_signals
        from amlhp.streams.exceptions import TapError
        from amlhp.streams.pacing import total_packets
        from amlhp.streams.tap import (
            CaptureCounters,
            Publisher,
            Tap,
            TapStats,
            live_packets,
            load_packets,
            pcap_packets,
            rate_packets,
            run_tap,
        )
        from amlhp.streams.tap_fleet import FleetTap
        from amlhp.streams.tap_seq import SeqState

        if bool(captures) == bool(interface):
            raise TapError("give capture files or --interface, not both and not neither")
        if rate is not None and (interface or pace is not None or rate <= 0):
            raise TapError("--rate (> 0) replays capture files; it excludes -i and --pace")
        if duration_s is not None and rate is None:
            raise TapError("--duration needs --rate")
        if gateways > 1 and (interface or state_dir is not None or start_seq is not None):
            raise TapError("--gateways replays capture files; it excludes -i, --state-dir "
                           "and --start-seq")  # fmt: skip
        settings = _settings(ctx, "tap")
        stop = threading.Event()
        install_stop_signals(stop)
        served = start_metrics("tap", metrics_port, settings)
        if state_dir is None and interface:
            state_dir = Path("var/tap")
        tap: Publisher
        if gateways > 1:
            tap = FleetTap(
                settings, gateway, gateways, batch_size=batch_size, max_delay_ms=max_delay_ms
            )
            first_seq = 0
        else:
            single = Tap(
                settings,
                gateway,
                batch_size=batch_size,
                max_delay_ms=max_delay_ms,
                start_seq=start_seq,
                seq_state=SeqState(settings.under_home(state_dir), gateway) if state_dir else None,
            )
            tap, first_seq = single, single.seq_start.first
        out = console()
        counters = CaptureCounters()
        if interface:
            source = live_packets(interface, stop=stop, max_packets=max_packets, counters=counters)
        elif rate is not None:
            packets = load_packets(captures)
            count = (
                total_packets(rate, duration_s)
                if duration_s is not None
                else max(1, loops) * len(packets)
            )
            source = rate_packets(packets, rate=rate, count=count, stop=stop)
        else:
            source = pcap_packets(
                captures, pace=pace, loops=loops, keep_timestamps=keep_timestamps, stop=stop
            )
        with out.status("tap starting") as status:

            def progress(stats: TapStats) -> None:
                status.update(
                    f"tap {gateway}: {stats.packets} packets, {stats.messages} messages, "
                    f"{stats.delivered_packets} delivered, {stats.failed_packets} failed"
                )

            started = time.time()
            stats = run_tap(tap, source, stop=stop, on_progress=progress)
            elapsed = time.time() - started
        summary = {"gateway": gateway, "first_seq": first_seq, **stats.as_dict()}
        if isinstance(tap, FleetTap):
            summary.update(tap.summary())
        elif tap.seq_start.unsure is not None:
            summary["unsure_seqs"] = list(tap.seq_start.unsure)
        if interface:
            summary["kernel_dropped"] = counters.kernel_dropped
        summary.update(
            {
                "started_at": round(started, 3),
                "elapsed_s": round(elapsed, 3),
                "packets_per_second": round(stats.packets / elapsed, 1) if elapsed > 0 else None,
                "rate": rate,
            }
        )
        typer.echo(json.dumps(summary))
        if served.server is not None and linger_s > 0 and not stop.is_set():
            stop.wait(linger_s)
        served.close()
        if stats.failed_packets or stats.failed_messages:
            raise typer.Exit(1)

    @app.command("worker")
    def worker_cmd(
        ctx: typer.Context,
        model: Path | None = typer.Option(
            None, "--model", help="Model artifact to serve and watch (default: bundled)"
        ),
        max_batch: int = typer.Option(
            1024, "--batch-size", "--max-batch", help="Max packets per inference"
        ),
        max_delay_ms: float = typer.Option(20.0, "--max-delay-ms", help="Max batching delay"),
        app_id: str | None = typer.Option(
            None, "--group", "--app-id", help="Consumer group (the Faust app id)"
        ),
        threads: int = typer.Option(
            1,
            "--threads",
            min=0,
            help="torch threads for scoring (0: torch's default, one per core). One is "
            "fastest where the worker shares its cores with the broker, taps or other "
            "workers: more threads then spin against each other",
        ),
        backend: str = typer.Option(
            "auto",
            "--backend",
            help="Scorer backend: auto (native: a C kernel built for this CPU; fast or numpy "
            "where no C compiler works), native, fast, torch, onnx or numpy",
        ),
        score_threads: int = typer.Option(
            0,
            "--score-threads",
            min=0,
            help="Threads scoring the chunks of a micro-batch side by side (0: the cores "
            "left after the event loop, at least 1)",
        ),
        explain_every: int = typer.Option(
            0,
            "--explain-every",
            min=0,
            help="Explain the verdicts of packets whose tap seq is a multiple of N (every "
            "Nth packet per gateway) to the explanation topic; 0: off",
        ),
        explain_max_per_s: float = typer.Option(
            1.0, "--explain-max-per-s", help="Cap on explanations per second (rest dropped)"
        ),
        explain_samples: int = typer.Option(
            8, "--explain-samples", min=1, help="Shapley permutations per explanation"
        ),
        explain_queue: int = typer.Option(
            16, "--explain-queue", min=1, help="Packets waiting for explanation (rest dropped)"
        ),
        sites: Path | None = typer.Option(
            None,
            "--sites",
            help="Folder of learnt sites (amlhp model adapt): each profile judges its "
            "gateways' packets over this model; watched and reloaded like the model "
            "(default: AMLHP_SITES_DIR)",
        ),
        metrics_port: int = metrics_option(),
    ) -> None:
        """Run the Faust encode + score worker (scale out by starting more)."""
        import functools
        import os

        from amlhp.model.scorer import default_model_path, load_scorer, torch_installed
        from amlhp.streams.explain_sample import ExplainConfig
        from amlhp.streams.worker import WorkerOptions, run_worker

        if threads > 0 and torch_installed():
            import torch

            torch.set_num_threads(threads)
        workers = score_threads or max(1, len(os.sched_getaffinity(0)) - 1)
        settings = _settings(ctx, "worker", app_id)
        sites = sites or settings.sites_dir
        loader = functools.partial(load_scorer, sites=sites, backend=backend, workers=workers)
        options = WorkerOptions(
            sites_dir=sites,
            model_path=model or default_model_path(),
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            app_id=app_id,
            explain=ExplainConfig(explain_every, explain_max_per_s, explain_queue, explain_samples)
            if explain_every > 0
            else None,
        )
        start_metrics(
            "worker",
            metrics_port,
            settings,
            lag_group=app_id or settings.consumer_group,
            lag_topics=[settings.topic_raw],
        )
        run_worker(settings, options, loader)

    def verdict_sink() -> Any:
        from amlhp.streams.sink import ParquetSink

        return ParquetSink

    add_sink_command(
        app,
        "sink",
        "sink",
        verdict_sink,
        out=Path("out/verdicts"),
        roll_rows=200_000,
        metrics_port=0,
        doc="Write verdicts to a hive-partitioned Parquet dataset (exactly once per file).",
    )

    @app.command("demo-capture")
    def demo_capture_cmd(
        public: Path = typer.Option(
            Path("../shared/data/public"), "--public", help="Folder of the public captures"
        ),
        out: Path = typer.Option(Path("data/demo/demo.pcap"), "--out", "-o", help="pcap to write"),
    ) -> None:
        """Rebuild the demo capture from the public captures (see data/demo/README.md)."""
        from amlhp.streams.demo_capture import build_demo_capture

        manifest = build_demo_capture(public, out)
        typer.echo(json.dumps({k: manifest[k] for k in ("packets", "packets_by_label", "sha256")}))
