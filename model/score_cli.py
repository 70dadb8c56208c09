"""``amlhp score``: captures to verdicts offline (see :mod:`amlhp.model.offline`)."""

from __future__ import annotations

from pathlib import Path

import typer

from amlhp.context import settings_of
from amlhp.model.cli import AsJson
from amlhp.progress import echo_result


def register_score(app: typer.Typer) -> None:
    """Add ``amlhp score`` to the root app."""

    @app.command("score")
    def score(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(
            ..., metavar="PCAP", help="pcap/pcapng files or folders (-: standard input)"
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Parquet file to write, one row per packet (-: standard output; the "
            "summary then goes to standard error)",
        ),
        model_path: Path | None = typer.Option(
            None, "--model", help="Artifact [the committed default model]"
        ),
        batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Packets per batch"),
        backend: str = typer.Option(
            "auto", "--backend", help="auto, native, fast, torch, onnx or numpy"
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda"),
        gateway: str = typer.Option("offline", "--gateway", "-g", help="Gateway id of the input"),
        sites: Path | None = typer.Option(
            None,
            "--sites",
            help="Learnt sites (amlhp model adapt): the gateway's profile judges (default: "
            "AMLHP_SITES_DIR)",
        ),
        as_json: AsJson = False,
    ) -> None:
        """Score captures offline, without Kafka (same encoder and scorer as the stream)."""
        from amlhp.model.offline import score_captures
        from amlhp.model.scorer import default_model_path, load_scorer
        from amlhp.stdio import captures_with_stdin, is_stdio

        scorer = load_scorer(
            model_path or default_model_path(),
            sites=sites or settings_of(ctx).sites_dir,
            backend=backend,
            device=device,
        )
        with captures_with_stdin(captures) as paths:
            summary = score_captures(paths, out, scorer, batch_size=batch_size, gateway=gateway)
        skipped = ", ".join(f"{r} {n}" for r, n in summary["not_scored"].items())
        echo_result(
            summary,
            as_json=as_json,
            headline=f"scored {summary['scored']} of {summary['packets']} packets -> {out}\n"
            + ", ".join(f"{d} {n}" for d, n in summary["decisions"].items())
            + (f"\nnot scored: {skipped}" if skipped else ""),
            counts={label or "(not scored)": n for label, n in summary["labels"].items()},
            width=26,
            err=is_stdio(out),
        )
        if summary["scored"] == 0:
            what = "no packet" if summary["packets"] == 0 else "no packet could be scored"
            typer.echo(f"warning: {what} in {', '.join(map(str, captures))}", err=True)
            raise typer.Exit(1)
