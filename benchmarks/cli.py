"""Sub-commands of `amlhp` contributed by the `benchmarks` stage: ``amlhp bench ...``.

``bench`` is a Typer sub-app; each benchmark adds itself through its own ``_register_*``
function below, so benchmarks stay independent of each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _register_encode(bench: typer.Typer) -> None:
    @bench.command("encode")
    def encode(
        data: Path | None = typer.Option(
            None, "--data", help="Folder of captures [<repo>/../shared/data/public]"
        ),
        packets: int = typer.Option(
            100_000, "--packets", help="Packets to encode per run (0: all full batches)"
        ),
        batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Packets per batch"),
        repeat: int = typer.Option(5, "--repeat", min=1, help="Runs; the best one counts"),
        reference_packets: int = typer.Option(
            5000, "--reference-packets", min=1, help="Packets for the reference encoder"
        ),
        payload_bytes: int = typer.Option(64, "--payload-bytes", "-P", min=1, help="P"),
        cpu: int | None = typer.Option(
            None, "--cpu", help="Pin the process to this CPU core (Linux) for a one-core figure"
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON"),
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
        if as_json:
            typer.echo(json.dumps(result.as_dict(), indent=2))
            return
        runs = ", ".join(f"{pps:,.0f}" for pps in result.fast_runs_pps)
        typer.echo(
            f"fast encoder:      {result.fast_pps:>12,.0f} packets/s  (best of {result.repeat} "
            f"runs over {result.packets:,} packets in batches of {result.batch_size}: {runs})"
        )
        typer.echo(
            f"reference encoder: {result.reference_pps:>12,.0f} packets/s  "
            f"({result.reference_packets:,} packets, one at a time)"
        )
        typer.echo(f"speed-up:          {result.speedup:>12.1f}x")
        typer.echo(f"machine:           {result.machine['cpu']}")


def register(app: typer.Typer) -> None:
    """Add the ``bench`` sub-app with its commands (heavy imports stay inside commands)."""
    bench = typer.Typer(
        name="bench", help="Throughput and latency benchmarks.", no_args_is_help=True
    )
    _register_encode(bench)
    app.add_typer(bench, name="bench")
