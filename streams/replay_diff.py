"""``amlhp replay-diff A B``: how two verdict datasets label the same packets.

"How would the new model have labelled last Tuesday?" is answered by replaying the window
with the new model and comparing with the live dataset (or with another replay): the
packets are joined on their key (``gateway``, ``seq``), and the comparison gives the
per-class confusion (A's label -> B's label), the decision confusion, and the packets only
one side has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from amlhp.streams.exceptions import ReplayError

KEY = ["gateway", "seq"]


def _load(root: Path) -> pa.Table:
    from amlhp.pipeline.dataset import read_verdicts

    if not root.is_dir():
        raise ReplayError(f"no verdict dataset at {root}")
    table = read_verdicts(root)
    if table.num_rows == 0:
        raise ReplayError(f"{root} holds no verdicts")
    table = table.select([*KEY, "label", "decision", "model_version"])
    return table.set_column(0, "gateway", table.column("gateway").cast(pa.string()))


def _pairs(table: pa.Table, a: str, b: str) -> dict[str, dict[str, int]]:
    grouped = table.group_by([a, b]).aggregate([([], "count_all")])
    out: dict[str, dict[str, int]] = {}
    for row in grouped.to_pylist():
        out.setdefault(str(row[a]), {})[str(row[b])] = int(row["count_all"])
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def diff_datasets(a: Path, b: Path) -> dict[str, Any]:
    """The comparison of dataset ``a`` with dataset ``b`` (see the module docstring)."""
    left = _load(a).rename_columns(["gateway", "seq", "label_a", "decision_a", "model_a"])
    right = _load(b).rename_columns(["gateway", "seq", "label_b", "decision_b", "model_b"])
    for name, table in (("A", left), ("B", right)):
        keys = table.group_by(KEY).aggregate([([], "count_all")])
        if keys.num_rows != table.num_rows:
            raise ReplayError(f"dataset {name} holds {table.num_rows - keys.num_rows} duplicates")
    both = left.join(right, KEY, join_type="inner")
    same = int(pc.sum(pc.equal(both.column("label_a"), both.column("label_b"))).as_py() or 0)
    return {
        "a": {"path": str(a), "verdicts": left.num_rows,
              "models": sorted(set(left.column("model_a").to_pylist()))},
        "b": {"path": str(b), "verdicts": right.num_rows,
              "models": sorted(set(right.column("model_b").to_pylist()))},
        "common": both.num_rows,
        "only_a": left.num_rows - both.num_rows,
        "only_b": right.num_rows - both.num_rows,
        "same_label": same,
        "agreement": round(same / both.num_rows, 6) if both.num_rows else None,
        "labels": _pairs(both, "label_a", "label_b"),
        "decisions": _pairs(both, "decision_a", "decision_b"),
    }  # fmt: skip


def print_diff(result: dict[str, Any]) -> None:
    """Per A label: packets, how many B labels the same, and B's other labels (top 3);
    then the decisions that changed (a learnt site changes decisions, not classes)."""
    from rich.table import Table

    from amlhp.progress import console

    table = Table("label in A", "packets", "same in B", "B says instead (top 3)",
                  title="labels of the same packets")  # fmt: skip
    for label, row in result["labels"].items():
        total = sum(row.values())
        others = sorted(((n, b) for b, n in row.items() if b != label), reverse=True)[:3]
        table.add_row(label, f"{total:,}", f"{row.get(label, 0):,}",
                      ", ".join(f"{b} ({n:,})" for n, b in others))  # fmt: skip
    out = console()
    out.print(table)
    moved = [(a, b, n) for a, row in result["decisions"].items() for b, n in row.items() if a != b]
    if moved:
        changes = Table("decision in A", "decision in B", "packets", title="changed decisions")
        for a, b, n in sorted(moved, key=lambda m: -m[2]):
            changes.add_row(a, b, f"{n:,}")
        out.print(changes)
    agreement = result["agreement"]
    out.print(
        f"common packets {result['common']:,}, same label {result['same_label']:,}"
        + ("" if agreement is None else f" ({agreement:.2%})")
        + f"; only in A {result['only_a']:,}, only in B {result['only_b']:,}"
    )
