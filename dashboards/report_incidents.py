"""The incidents section of ``amlhp report``: what the alerts stage raised during the run.

Operators read incidents, not verdict mixes, so the run report lists them beside the
plots: one row per incident (the latest revision of each ``incident_id`` in the alert
dataset, the alerts sink's ``--out``), limited to incidents that overlap the report's
time range. The sample sequence numbers point into the verdict dataset of the same run
for drill-down (``gateway`` and ``seq`` are its keys).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from amlhp.dashboards.exceptions import DashboardsError

#: Rows shown in the page; the count above the table says how many there are in all.
MAX_INCIDENTS_SHOWN = 200

_COLUMNS = ("Gateway", "Host", "Role", "Kind", "Status", "First seen", "Last seen",
            "Packets", "Score", "Classes", "Top ports", "Sample seqs")  # fmt: skip


@dataclass(frozen=True)
class IncidentSection:
    """The incidents of the report's range, latest revision each, by first packet."""

    root: Path
    incidents: list[dict[str, Any]]

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.incidents:
            counts[row["kind"]] = counts.get(row["kind"], 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> str:
        if not self.incidents:
            return "none"
        kinds = ", ".join(f"{kind} ({n})" for kind, n in self.by_kind().items())
        still_open = sum(row["status"] != "closed" for row in self.incidents)
        return f"{len(self.incidents):,}: {kinds}; {still_open} still open"

    def html(self) -> str:
        from amlhp.pipeline.incidents import iso

        head = "".join(f"<th>{c}</th>" for c in _COLUMNS)
        body = []
        for row in self.incidents[:MAX_INCIDENTS_SHOWN]:
            classes = ", ".join(
                f"{c} ({n:,})" for c, n in zip(row["classes"], row["class_packets"], strict=True)
            )
            ports = ", ".join(str(p) for p in row["top_ports"])
            samples = ", ".join(str(s) for s in row["sample_seqs"])
            cells = (row["gateway"], row["host"], row["role"], row["kind"], row["status"],
                     iso(row["first_seen_ns"]), iso(row["last_seen_ns"]),
                     f"{row['packets']:,}", f"{row['mean_score']:.3f}", classes, ports,
                     samples)  # fmt: skip
            body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells))
        shown = len(body)
        more = (
            f"<p>{shown} of {len(self.incidents):,} shown (the first by first packet).</p>"
            if shown < len(self.incidents)
            else ""
        )
        caption = (
            f"From {html.escape(str(self.root))}: the latest revision of each incident. "
            "Sample seqs are (gateway, seq) keys into the verdict dataset."
        )
        if not body:
            return f'<h2 id="incidents">Incidents</h2><p>No incidents. {caption}</p>'
        return (
            f'<h2 id="incidents">Incidents</h2><p>{caption}</p>{more}'
            f'<table class="incidents"><tr>{head}</tr>{"</tr>".join(body)}</tr></table>'
        )


def load_incidents(
    root: Path, since_ns: int | None = None, until_ns: int | None = None
) -> IncidentSection:
    """The incidents under the alert dataset ``root`` that overlap [since, until)."""
    from amlhp.pipeline.dataset import read_verdicts

    if not root.is_dir():
        raise DashboardsError(f"no alert dataset at {root} (the alerts sink's --out)")
    return incident_section(read_verdicts(root), root, since_ns, until_ns)


def incident_section(
    table: pa.Table, root: Path, since_ns: int | None = None, until_ns: int | None = None
) -> IncidentSection:
    """Alert rows (``amlhp.alert`` schema) -> the section for [since, until) (ns)."""
    from amlhp.pipeline.incidents import latest

    incidents = latest(table.to_pylist() if table.num_rows else [])
    if since_ns is not None:
        incidents = [i for i in incidents if i["last_seen_ns"] >= since_ns]
    if until_ns is not None:
        incidents = [i for i in incidents if i["first_seen_ns"] < until_ns]
    return IncidentSection(root, incidents)
