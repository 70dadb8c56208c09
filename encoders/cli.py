"""Sub-commands of `amlhp` contributed by the `encoders` stage: ``amlhp encode``."""

from __future__ import annotations

from pathlib import Path

import typer

from amlhp.context import settings_of
from amlhp.progress import echo_result


def register(app: typer.Typer) -> None:
    """Add this stage's commands to the root app (heavy imports stay inside commands)."""

    @app.command("encode")
    def encode(
        ctx: typer.Context,
        captures: list[Path] = typer.Argument(
            ...,
            metavar="PCAP",
            help="pcap/pcapng files, or folders searched for them",
            show_default=False,
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Parquet file to write"),
        payload_bytes: int | None = typer.Option(
            None, "--payload-bytes", "-P", help="Payload length P [AMLHP_PAYLOAD_BYTES, 64]"
        ),
        mask: list[str] = typer.Option(
            [],
            "--mask",
            help="Header field or group to zero (repeatable), e.g. ip.ttl, ports, checksums; "
            "default: ip.src, ip.dst as in the paper",
        ),
        no_mask: bool = typer.Option(False, "--no-mask", help="Zero no field at all"),
        gateway: str = typer.Option(
            "offline", "--gateway", "-g", help="Value of the gateway column"
        ),
        batch_size: int = typer.Option(1000, "--batch-size", min=1, help="Packets per batch"),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON"),
    ) -> None:
        """Encode captures into header/payload records (Parquet), one row per packet.

        Columns: identity (gateway, ts_ns, seq, wire_len, linktype), 5-tuple, header
        (128 bytes), payload (P bytes), status ('ok' or a reason code), source_file.
        """
        from amlhp.encoders.encode_command import run_encode

        default_p = settings_of(ctx).payload_bytes
        summary = run_encode(
            captures,
            out,
            payload_bytes=payload_bytes if payload_bytes is not None else default_p,
            mask_fields=() if no_mask else (tuple(mask) if mask else None),
            gateway=gateway,
            batch_size=batch_size,
        )
        echo_result(
            summary,
            as_json=as_json,
            headline=f"wrote {summary['packets']} packets to {summary['out']}",
            counts=summary["statuses"],
            width=22,
        )
