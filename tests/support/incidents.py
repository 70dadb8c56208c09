"""Comparing the incidents of the running alert stage with ``amlhp alerts`` offline."""

from __future__ import annotations

from typing import Any

#: what must agree between the stream's and the offline incidents (not the wall clocks,
#: nor the close reason: ``idle`` in the stream, ``end_of_input`` offline)
COMPARED = (
    "incident_id", "gateway", "host", "role", "kind", "severity", "techniques", "evidence",
    "first_seen_ns", "last_seen_ns", "opened_ns", "packets", "classes", "class_packets",
    "top_peers", "top_peer_packets", "top_ports", "sample_seqs", "model_version",
)  # fmt: skip


def comparable(incidents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compared fields of each incident, scores rounded, sorted by incident id."""
    out = []
    for row in incidents:
        item = {k: row[k] for k in COMPARED}
        item["mean_score"] = round(float(row["mean_score"]), 4)
        # float32 on the wire, float64 offline
        item["evidence"] = [{**e, "strength": round(float(e["strength"]), 4)}
                            for e in row["evidence"]]  # fmt: skip
        out.append(item)
    return sorted(out, key=lambda r: r["incident_id"])
