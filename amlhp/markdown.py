"""Markdown tables, the one format of every report the project writes (README, docs).

Every results command ends in a table whose lines the README quotes, so the header, the
separator and the cell joining are written once here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def markdown_table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, right: Sequence[int] = ()
) -> list[str]:
    """A table's lines: the header, its separator and one line a row; the columns whose
    indexes are in ``right`` are right-aligned (numbers)."""
    separator = ["---:" if i in right else "---" for i in range(len(header))]
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(separator) + "|",
        *("| " + " | ".join(str(value) for value in row) + " |" for row in rows),
    ]
