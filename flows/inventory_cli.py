"""``amlhp devices``: the device inventory, from the live topic or from flow verdicts.

Live, it reads the compacted ``amlhp.devices`` topic to its current end without joining a
consumer group and keeps the latest entry per gateway and host. Offline, it folds flow
verdicts (a Parquet file of ``amlhp flows score`` or a flow verdict dataset of
``amlhp flows sink``) with the same fold as the flow worker, so both give one inventory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from amlhp.context import settings_of


def _inventory(tallies: Any, version: str) -> Any:
    """Folded tallies as an inventory table (sorted by gateway and host)."""
    import pyarrow as pa

    from amlhp.flows.inventory import inventory_batch

    rows = [tallies[k].record(version, now_ns=0) for k in sorted(tallies)]
    return pa.Table.from_batches([inventory_batch(rows)])


def inventory_from_verdicts(path: Path) -> Any:
    """The inventory of flow verdicts read from Parquet (a file or a dataset folder);
    :class:`~amlhp.flows.exceptions.FlowDatasetError` when there are none to read."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from amlhp.flows.exceptions import FlowDatasetError
    from amlhp.flows.inventory import DeviceTally, fold

    if not path.exists():
        raise FlowDatasetError(f"no flow verdicts at {path}")
    try:
        table = pads.dataset(str(path), format="parquet").to_table()
    except (pa.ArrowInvalid, OSError) as exc:
        raise FlowDatasetError(f"{path} is not flow verdicts in Parquet: {exc}") from exc
    needed = {"gateway", "device_ip", "label", "uncertain", "ts_ns", "end_ns", "model_version"}
    missing = needed - set(table.column_names)
    if missing:
        raise FlowDatasetError(f"{path} is not flow verdicts: no {', '.join(sorted(missing))}")
    tallies: dict[tuple[str, str], DeviceTally] = {}
    versions: set[str] = set()
    for batch in table.to_batches():
        fold(tallies, batch)
        versions.update(str(v) for v in batch.column("model_version").to_pylist())
    return _inventory(tallies, ",".join(sorted(versions)))


def flows_of_captures(
    captures: list[Path],
    model: Path,
    gateway: str | None = None,
    per_file: bool = False,
    attack_model: str | None = None,
) -> tuple[dict[str, Any], str]:
    """The flow verdicts the flow worker would make of these captures, per gateway (each
    file scored as by ``amlhp flows score``, as ``gateway`` or its own name with
    ``per_file``), and the device model's version. ``attack_model``: as the worker's
    ``--attack-model`` (default: the committed one)."""
    import pyarrow as pa

    from amlhp.encoders.capture import expand_paths
    from amlhp.flows.artifact import load_attack_model, load_flow_model
    from amlhp.flows.online import DEFAULT_EXPLAIN_EVERY, FlowScorer, score_capture

    fm = load_flow_model(model)
    # explained flows whose attributions are off their class's profile are uncertain:
    # explain the same flows as the worker does, so the votes are the same
    scorer = FlowScorer(
        fm, attack=load_attack_model(attack_model, fm.config), explain_every=DEFAULT_EXPLAIN_EVERY
    )
    parts: dict[str, list[pa.RecordBatch]] = {}
    for path in expand_paths(captures):
        name = path.name if per_file else (gateway or str(path))
        parts.setdefault(name, []).append(score_capture(path, scorer, name))
    return {g: pa.Table.from_batches(b, scorer.schema) for g, b in parts.items()}, fm.version


def inventory_of_flows(flows: dict[str, Any], version: str) -> Any:
    """The inventory folded from :func:`flows_of_captures`' verdicts."""
    from amlhp.flows.inventory import DeviceTally, fold

    tallies: dict[tuple[str, str], DeviceTally] = {}
    for table in flows.values():
        for batch in table.to_batches():
            fold(tallies, batch)
    return _inventory(tallies, version)


def inventory_from_captures(
    captures: list[Path], model: Path, gateway: str | None = None, per_file: bool = False
) -> Any:
    """The inventory the flow worker would build from these captures."""
    return inventory_of_flows(*flows_of_captures(captures, model, gateway, per_file))


def register(app: typer.Typer) -> None:
    """Add ``amlhp devices`` to the root app."""

    @app.command("devices")
    def devices_cmd(
        ctx: typer.Context,
        flow_verdicts: Path | None = typer.Option(
            None,
            "--flow-verdicts",
            help="Fold these flow verdicts (Parquet file or dataset) instead of reading the topic",
        ),
        out: Path | None = typer.Option(None, "--out", "-o", help="Write the inventory (Parquet)"),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per host on stdout"),
        timeout: float = typer.Option(30.0, "--timeout", help="Seconds to read the topic"),
    ) -> None:
        """The device inventory: each host's device type and confidence, from its flows."""
        if flow_verdicts is not None:
            table = inventory_from_verdicts(flow_verdicts)
        else:
            from amlhp.pipeline.devices import read_inventory

            table = read_inventory(settings_of(ctx), timeout)
        if out is not None:
            import pyarrow.parquet as pq

            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out)
        if as_json:
            for row in table.to_pylist():
                typer.echo(json.dumps(row, sort_keys=True))
        else:
            from amlhp.pipeline.devices import print_inventory

            print_inventory(table)


__all__ = ["inventory_from_captures", "inventory_from_verdicts", "register"]
