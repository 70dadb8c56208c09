"""Sub-commands of `amlhp` contributed by the `benchmarks` stage: ``amlhp bench ...``.

``bench`` is a Typer sub-app; each benchmark adds itself through its own ``_register_*``
function below, so benchmarks stay independent of each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from amlhp.context import settings_of

#: options that several ``amlhp bench`` commands share (one declaration each)
RESULTS_DIR = Path("benchmarks/results")
WORK_DIR = Path("out/bench")
OutDir = Annotated[Path, typer.Option("--out-dir", help="Where the JSON results and plots go")]
WorkDir = Annotated[
    Path, typer.Option("--work-dir", help="Logs, profiles and the transient dataset")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print the result as JSON")]
Repeat = Annotated[int, typer.Option("--repeat", min=1, help="Runs; the best one counts")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Packets per batch")]
Quick = Annotated[
    bool, typer.Option("--quick", help="Short runs with small counts: checks, not figures")
]
Seconds = Annotated[float, typer.Option("--seconds", min=1, help="Seconds per offered load")]


def _register_encode(bench: typer.Typer) -> None:
    @bench.command("encode")
    def encode(
        data: Path | None = typer.Option(
            None, "--data", help="Folder of captures [<repo>/../shared/data/public]"
        ),
        packets: int = typer.Option(
            100_000, "--packets", help="Packets to encode per run (0: all full batches)"
        ),
        batch_size: BatchSize = 1000,
        repeat: Repeat = 5,
        reference_packets: int = typer.Option(
            5000, "--reference-packets", min=1, help="Packets for the reference encoder"
        ),
        payload_bytes: int = typer.Option(64, "--payload-bytes", "-P", min=1, help="P"),
        cpu: int | None = typer.Option(
            None, "--cpu", help="Pin the process to this CPU core (Linux) for a one-core figure"
        ),
        as_json: AsJson = False,
    ) -> None:
        """Packets/s of the fast (vectorised) and the reference (dpkt) encoder."""
        import os

        from amlhp.benchmarks.encode_bench import DEFAULT_DATA, run_encode_bench

        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        result = run_encode_bench(
            data or DEFAULT_DATA,
            packets=packets,
            batch_size=batch_size,
            repeat=repeat,
            reference_packets=reference_packets,
            payload_bytes=payload_bytes,
        )
        _echo(
            result.as_dict(),
            as_json,
            f"fast encoder:      {result.fast_pps:>12,.0f} packets/s  (best of {result.repeat} "
            f"runs over {result.packets:,} packets in batches of {result.batch_size}: "
            f"{_runs(result.fast_runs_pps)})",
            f"reference encoder: {result.reference_pps:>12,.0f} packets/s  "
            f"({result.reference_packets:,} packets, one at a time)",
            f"speed-up:          {result.speedup:>12.1f}x",
            *_mixed_lines(result.mixed),
            f"machine:           {result.machine['cpu']}",
        )


def _mixed_lines(mixed: dict[str, Any]) -> list[str]:
    if not mixed:
        return ["mixed IPv4/IPv6:   no IPv6 packet in these captures"]
    return [
        f"IPv4 only:         {mixed['ipv4_only_pps']:>12,.0f} packets/s",
        f"{mixed['ipv6_share']:.0%} IPv6:          {mixed['mixed_pps']:>12,.0f} packets/s  "
        f"({mixed['mixed_vs_ipv4_only']:.1%} of IPv4 only; {mixed['packets']:,} packets)",
    ]


def _register_score(bench: typer.Typer) -> None:
    @bench.command("score")
    def score(
        model: Path | None = typer.Option(
            None, "--model", help="Artifact [the committed default model]"
        ),
        data: Path | None = typer.Option(
            None, "--data", help="Folder of captures [<repo>/../shared/data/public]"
        ),
        batch_size: BatchSize = 1000,
        packets: int = typer.Option(20_000, "--packets", min=1, help="Packets scored per run"),
        repeat: Repeat = 5,
        backend: str = typer.Option(
            "auto", "--backend", help="auto, native, fast, torch, onnx or numpy"
        ),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto"),
        isa: str = typer.Option(
            "auto", "--isa", help="Native kernel variant: auto, avx512, avx2 or generic"
        ),
        threads: int | None = typer.Option(None, "--threads", min=1, help="torch/ORT threads"),
        workers: int = typer.Option(
            1,
            "--score-threads",
            "--workers",
            min=1,
            help="Score a batch's chunks on this many threads, as the worker's "
            "--score-threads (data parallel; use with --threads 1)",
        ),
        chunk: int | None = typer.Option(
            None,
            "--chunk",
            min=1,
            help="Rows per forward pass [256 on the CPU; on CUDA the fixed device batch, 32,768]",
        ),
        fig10: bool = typer.Option(
            False, "--fig10", help="Batch sizes 1..10,000: time and peak memory (paper Fig. 10)"
        ),
        compare: bool = typer.Option(
            False, "--compare", help="Every backend x 1 and 2 threads at batch 1 to 10,000"
        ),
        sweep: bool = typer.Option(
            False, "--sweep", help="Model sizes vs params, FLOPs and packets/s (untrained)"
        ),
        out_dir: OutDir = RESULTS_DIR,
        as_json: AsJson = False,
    ) -> None:
        """Packets/s of the scorer alone on encoded records (Arrow batch -> ids + probs)."""
        from amlhp.benchmarks.encode_bench import DEFAULT_DATA
        from amlhp.benchmarks.score_bench import (
            ScorerChoice,
            compare_backends,
            pps_at,
            run_fig10,
            run_score_bench,
            size_sweep,
        )

        choice = ScorerChoice(
            model=model, backend=backend, device=device, threads=threads, chunk=chunk,
            workers=workers, isa=isa,
        )  # fmt: skip
        if fig10:
            doc = run_fig10(
                choice=choice,
                data=data or DEFAULT_DATA,
                repeat=repeat,
                min_packets=packets,
                out_json=out_dir / "fig10.json",
                out_png=out_dir / "fig10.png",
            )
            _echo_rows(doc, as_json, _fig10_line)
            if as_json:
                return
            typer.echo(f"packets/s at batch 100:  {pps_at(doc, 100) or 0:,.0f}")
            typer.echo(f"packets/s at batch 1000: {pps_at(doc, 1000) or 0:,.0f}")
            typer.echo(f"wrote {out_dir / 'fig10.json'} and {out_dir / 'fig10.png'}")
            typer.echo(f"machine: {doc['machine'].get('cpu')}, {doc['threads']} threads")
            return
        if sweep:
            doc = size_sweep(batch_size=batch_size, repeat=repeat, threads=threads)
            _echo_rows(
                _write(doc, out_dir / "size_sweep.json"),
                as_json,
                lambda row: (
                    f"channels {row['channels']:>3} tokens {row['attention_tokens']:>3} "
                    f"ffn {row['ffn_dim']:>3}: {row['params']:>7,} params "
                    f"{row['flops'] / 1e6:6.2f} MFLOPs "
                    f"{row['packets_per_second']:>10,.0f} packets/s"
                ),
            )
            return
        if compare:
            doc = compare_backends(
                model=model, data=data or DEFAULT_DATA, repeat=repeat, min_packets=packets
            )
            _echo_rows(
                _write(doc, out_dir / "score_backends.json"),
                as_json,
                lambda row: (
                    f"{row['backend']:<6} threads {row['threads']} batch {row['batch_size']:>6}: "
                    f"{row['packets_per_second']:>10,.0f} packets/s"
                ),
            )
            return
        result = run_score_bench(
            choice=choice,
            data=data or DEFAULT_DATA,
            batch_size=batch_size,
            repeat=repeat,
            min_packets=packets,
        )
        _echo(
            result.as_dict(),
            as_json,
            f"scorer: {result.packets_per_second:>12,.0f} packets/s at batch {result.batch_size} "
            f"(best of {result.repeat}: {_runs(result.runs_pps)}; {result.backend}"
            + (f" ({result.isa})" if result.isa else "")
            + " on "
            f"{result.device}, {result.threads} threads, {result.workers} workers, "
            f"chunks of {result.chunk})",
            f"machine: {result.machine['cpu']}",
        )


def _echo(doc: dict[str, Any], as_json: bool, *lines: str) -> None:
    """Print a benchmark's result: ``doc`` as JSON with ``--json``, else the ``lines``."""
    typer.echo(json.dumps(doc, indent=2) if as_json else "\n".join(lines))


def _runs(runs_pps: Sequence[float]) -> str:
    """Every run's packets/s, for the "best of N" line."""
    return ", ".join(f"{pps:,.0f}" for pps in runs_pps)


def _fig10_line(row: dict[str, Any]) -> str:
    mem = row.get("peak_memory_mb")
    return (
        f"batch {row['batch_size']:>6}: {row['packets_per_second']:>10,.0f} packets/s  "
        f"{row['ms_per_packet']:.4f} ms/packet"
        + (f"  peak memory {mem:.1f} MB" if mem is not None else "")
    )


def _floats(text: str | None) -> tuple[float, ...]:
    if not text:
        return ()
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"not a comma-separated list of numbers: {text!r}") from exc


def _status_printer() -> Any:
    from amlhp.progress import console

    out = console()

    def show(line: str) -> None:
        out.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {line}")

    return show


def _register_e2e(bench: typer.Typer) -> None:
    @bench.command("e2e")
    def e2e(
        ctx: typer.Context,
        fractions: str = typer.Option(
            "0.25,0.5,1,1.5", "--fractions", help="Offered loads as fractions of capacity"
        ),
        rates: str | None = typer.Option(
            None, "--rates", help="Offered loads in packets/s (instead of --fractions)"
        ),
        seconds: Seconds = 60.0,
        capacity: float | None = typer.Option(
            None, "--capacity", help="Skip the full-speed run and take this capacity (packets/s)"
        ),
        capacity_loops: int = typer.Option(
            4, "--capacity-loops", min=1, help="Passes over the capture in the full-speed run"
        ),
        capture: Path | None = typer.Option(None, "--capture", help="Capture to replay [demo]"),
        workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (one group)"),
        partitions: int = typer.Option(4, "--partitions", min=1, help="Partitions per topic"),
        worker_threads: int | None = typer.Option(
            None, "--worker-threads", min=0, help="Passed to `amlhp worker --threads`"
        ),
        score_threads: int | None = typer.Option(
            None, "--score-threads", min=1, help="Passed to `amlhp worker --score-threads`"
        ),
        profile: bool = typer.Option(
            False, "--profile", help="py-spy profiles of worker, sink and tap at ~100% load"
        ),
        quick: Quick = False,
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
        as_json: AsJson = False,
    ) -> None:
        """Throughput, latency, lag and exact accounting at fixed offered loads."""
        from amlhp.benchmarks.e2e import DEFAULT_FRACTIONS, E2EConfig, run_e2e
        from amlhp.benchmarks.plots import plot_e2e
        from amlhp.benchmarks.report import e2e_table

        overrides: dict[str, Any] = {
            "fractions": _floats(fractions) or DEFAULT_FRACTIONS,
            "rates": _floats(rates),
            "capacity_pps": capacity,
            "workers": workers,
            "partitions": partitions,
            "profile": profile,
        }
        worker_args: tuple[str, ...] = ()
        if worker_threads is not None:
            worker_args += ("--threads", str(worker_threads))
        if score_threads is not None:
            worker_args += ("--score-threads", str(score_threads))
        if worker_args:
            overrides["worker_args"] = worker_args
        if capture is not None:
            overrides["capture"] = capture
        if quick:
            if fractions == "0.25,0.5,1,1.5":
                overrides.pop("fractions")
            cfg = E2EConfig.quick_config(**overrides)
        else:
            cfg = E2EConfig(seconds_per_rate=seconds, capacity_loops=capacity_loops, **overrides)
        doc = run_e2e(settings_of(ctx), cfg, work_dir=work_dir, on_status=_status_printer())
        plot_e2e(_write(doc, out_dir / "e2e.json"), out_dir)
        _echo(doc, as_json, e2e_table(doc), f"wrote {out_dir / 'e2e.json'} and plots in {out_dir}")


def _write(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    """Save a benchmark's result JSON (the figures' one source) and hand it on."""
    from amlhp.benchmarks.results import write_json

    write_json(doc, path)
    return doc


def _run_saved(
    ctx: typer.Context, run: Callable[..., dict[str, Any]], path: Path, **options: Any
) -> dict[str, Any]:
    """Run a benchmark of the running pipeline with the status printer; save its JSON to ``path``.

    The pipeline benchmarks all take the settings first and report progress through
    ``on_status``; their result JSON is what the figures and tables are made from.
    """
    return _write(run(settings_of(ctx), on_status=_status_printer(), **options), path)


def _echo_rows(doc: dict[str, Any], as_json: bool, line: Callable[[dict[str, Any]], str]) -> None:
    """Print ``doc`` as JSON, or ``line`` of each of its rows."""
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    for row in doc["rows"]:
        typer.echo(line(row))


def _register_suite(bench: typer.Typer) -> None:
    @bench.command("stages")
    def stages(
        ctx: typer.Context,
        quick: Quick = False,
        score_threads: int = typer.Option(1, "--score-threads", min=1, help="Scorer threads"),
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
    ) -> None:
        """tap -> Kafka, encoder, scorer (Fig. 10) and Parquet sink, one at a time."""
        from amlhp.benchmarks.report import stages_table
        from amlhp.benchmarks.stages import run_stages

        doc = _run_saved(
            ctx,
            run_stages,
            out_dir / "stages.json",
            out_dir=out_dir,
            work_dir=work_dir,
            quick=quick,
            score_threads=score_threads,
        )
        typer.echo(stages_table(doc))

    @bench.command("scaleout")
    def scaleout(
        ctx: typer.Context,
        partitions: int = typer.Option(4, "--partitions", min=2, help="Partitions per topic"),
        capacity_loops: int = typer.Option(
            3,
            "--capacity-loops",
            min=1,
            help="Passes over the capture in all, split between the taps (at least 1 each)",
        ),
        quick: Quick = False,
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
    ) -> None:
        """Capacity with 1 and 2 workers in one consumer group (one tap per partition)."""
        from amlhp.benchmarks.plots import plot_scaleout
        from amlhp.benchmarks.report import scaleout_table
        from amlhp.benchmarks.scaleout import run_scaleout

        doc = _run_saved(
            ctx,
            run_scaleout,
            out_dir / "scaleout.json",
            partitions=partitions,
            capacity_loops=1 if quick else capacity_loops,
            work_dir=work_dir,
            quick=quick,
        )
        plot_scaleout(doc, out_dir / "scaleout.png")
        typer.echo(scaleout_table(doc))

    @bench.command("replay")
    def replay(
        ctx: typer.Context,
        gateways: int = typer.Option(4, "--gateways", min=1, help="Copies of the demo capture"),
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
    ) -> None:
        """amlhp replay's packets/s (1 and 2 processes) beside the live end-to-end rate."""
        from amlhp.benchmarks.replay_bench import replay_table, run_replay_bench

        doc = _run_saved(
            ctx,
            run_replay_bench,
            out_dir / "replay.json",
            work_dir=work_dir,
            results_dir=out_dir,
            gateways=gateways,
        )
        typer.echo(replay_table(doc))

    @bench.command("adapt")
    def adapt(
        ctx: typer.Context,
        repeat: int = typer.Option(3, "--repeat", min=1, help="Serving rounds (best kept)"),
        out_dir: OutDir = RESULTS_DIR,
    ) -> None:
        """Learning a site: adapting on one hour of a gateway, and the serving cost."""
        from amlhp.benchmarks.adapt_bench import adapt_table, run_adapt_bench

        doc = _run_saved(ctx, run_adapt_bench, out_dir / "adapt.json", repeat=repeat)
        typer.echo(adapt_table(doc))

    @bench.command("fleet")
    def fleet(
        ctx: typer.Context,
        gateways: str = typer.Option(
            "4,1000,10000", "--gateways", help="Fleet sizes, comma-separated"
        ),
        loops: int = typer.Option(2, "--loop", min=1, help="Passes over the demo capture"),
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
    ) -> None:
        """Capacity, memory, manifests and series at N gateways (one tap --gateways N)."""
        from amlhp.benchmarks.fleet import fleet_table, run_fleet
        from amlhp.data import DEMO_CAPTURE

        sizes = tuple(int(v) for v in _floats(gateways) or ())
        doc = _run_saved(
            ctx,
            run_fleet,
            out_dir / "fleet.json",
            capture=DEMO_CAPTURE,
            sizes=sizes,
            loops=loops,
            work_dir=work_dir,
        )
        typer.echo(fleet_table(doc))

    @bench.command("all")
    def run_all_cmd(
        ctx: typer.Context,
        quick: Quick = False,
        seconds: Seconds = 60.0,
        out_dir: OutDir = RESULTS_DIR,
        work_dir: WorkDir = WORK_DIR,
    ) -> None:
        """Stages, end to end and scale-out; JSON, plots and results.md in --out-dir."""
        from amlhp.benchmarks.suite import run_all

        written = run_all(
            settings_of(ctx),
            out_dir,
            work_dir=work_dir,
            quick=quick,
            seconds_per_rate=seconds,
            on_status=_status_printer(),
        )
        typer.echo(json.dumps(written, indent=2))

    @bench.command("table")
    def table(
        results: list[Path] = typer.Argument(..., help="Result JSON files (e2e, stages, ...)"),
    ) -> None:
        """Print the markdown table(s) of result JSON files (for README and docs)."""
        from amlhp.benchmarks.report import render
        from amlhp.benchmarks.results import read_json

        typer.echo("\n\n".join(render(read_json(path)) for path in results))


def register(app: typer.Typer) -> None:
    """Add the ``bench`` sub-app with its commands (heavy imports stay inside commands)."""
    bench = typer.Typer(
        name="bench", help="Throughput and latency benchmarks.", no_args_is_help=True
    )
    _register_encode(bench)
    _register_score(bench)
    _register_e2e(bench)
    _register_suite(bench)
    from amlhp.benchmarks import flows_beside, secure_bench

    secure_bench.register(bench)
    flows_beside.register(bench)
    app.add_typer(bench, name="bench")
