"""How the model judges the IPv6 twin of an IPv4 attack (:mod:`amlhp.lab.twins`): per class
and binary, per family, and the gap between the families.

Labels come from the run's manifest, not from the model: a packet to or from the attacker
inside an attack's time window (plus a second for the last replies) has that attack's
class; a packet to or from the camera is benign; anything else (the attacker outside every
window) is left out. Neighbour discovery and MLD (ICMPv6 types 130-137, 143) are left out
too: they have no IPv4 twin to compare with (ARP is not scored), and they are the link's
business, judged by the behaviour detectors. Rows the model does not score (ARP) are out.

Per family and true class: ``recall`` (the share predicted as that class) and ``flagged``
(the share the product's decision calls malicious). The goal (issue "The whole frame"):
every class's and the binary figures within 2 points between the families.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Final

import numpy as np

from amlhp.encoders.capture import iter_encoded
from amlhp.lab.exceptions import LabError
from amlhp.model.decision import MALICIOUS
from amlhp.model.scorer import Scorer

#: seconds after a window's end whose attacker packets still belong to it (late replies)
GRACE_S: Final = 1.0
#: ICMPv6 types of neighbour discovery and MLD, left out of the comparison
LINK_ICMPV6: Final = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})
ICMPV6: Final = 58
#: the largest gap, in points, the goal allows between the families
GOAL_POINTS: Final = 2.0


def _labels(
    manifest: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, list[str], set[str], set[str]]:
    windows = manifest["windows"]
    starts = np.array([w["start"] for w in windows], np.float64)
    ends = np.array([w["end"] + GRACE_S for w in windows], np.float64)
    return (
        starts,
        ends,
        [w["class"] for w in windows],
        set(manifest["attacker"]),
        set(manifest["benign"]),
    )


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """The twin run's manifest, with the keys the labels need; a clear :class:`LabError`
    when it is missing, not JSON, or not a twin run's."""
    path = run_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read {path}: {exc}") from exc
    keys = ("capture", "windows", "attacker", "benign")
    missing = [k for k in keys if not isinstance(manifest, dict) or k not in manifest]
    if missing:
        raise LabError(f"{path} is not a manifest of `amlhp lab twins` (lacks {missing})")
    return manifest


def judged_rows(run_dir: Path, scorer: Scorer) -> list[tuple[int, str, str, bool]]:
    """(family, true class, predicted class, flagged) of every packet the comparison
    counts (module docstring), in capture order."""
    manifest = read_manifest(run_dir)
    starts, ends, classes, attacker, benign = _labels(manifest)
    rows: list[tuple[int, str, str, bool]] = []
    for batch in iter_encoded([run_dir / manifest["capture"]], scorer.encoder_config):
        scores = scorer.score_batch(batch)
        seconds = batch.column("ts_ns").to_numpy() / 1e9
        payload = batch.column("payload").to_pylist()
        columns = zip(
            batch.column("src_ip").to_pylist(),
            batch.column("dst_ip").to_pylist(),
            batch.column("proto").to_pylist(),
            strict=True,
        )
        for i, (src, dst, proto) in enumerate(columns):
            if not scores.ok[i]:
                continue
            if proto == ICMPV6 and payload[i] and payload[i][0] in LINK_ICMPV6:
                continue
            if src in attacker or dst in attacker:
                inside = np.flatnonzero((starts <= seconds[i]) & (seconds[i] <= ends))
                if not len(inside):
                    continue
                truth = classes[int(inside[0])]
            elif src in benign or dst in benign:
                truth = "benign"
            else:
                continue
            family = 6 if ":" in src else 4
            predicted = scorer.classes[int(scores.class_ids[i])]
            rows.append((family, truth, predicted, bool(scores.decision[i] == MALICIOUS)))
    return rows


def _rate(hits: int, total: int) -> float | None:
    return round(100.0 * hits / total, 2) if total else None


def compare(rows: list[tuple[int, str, str, bool]]) -> dict[str, Any]:
    """Per family and class: packets, recall and flagged (points); binary detection on the
    attacks and false alarms on the benign; each figure's gap (IPv6 minus IPv4)."""
    count: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    for family, truth, predicted, flagged in rows:
        c = count[family, truth]
        c["packets"] += 1
        c["right"] += predicted == truth
        c["flagged"] += flagged
        c["any_attack"] += predicted != "benign"
    classes = sorted({truth for _, truth, _, _ in rows})
    table: dict[str, Any] = {}
    for truth in classes:
        entry: dict[str, Any] = {}
        for family in (4, 6):
            c = count[family, truth]
            entry[f"ipv{family}"] = {
                "packets": c["packets"],
                "recall": _rate(c["right"], c["packets"]),
                "flagged": _rate(c["flagged"], c["packets"]),
            }
        table[truth] = entry
    binary: dict[str, Any] = {}
    for family in (4, 6):
        attack = [count[family, t] for t in classes if t != "benign"]
        total = sum(c["packets"] for c in attack)
        benign = count[family, "benign"]
        binary[f"ipv{family}"] = {
            "attack_packets": total,
            "attacks_flagged": _rate(sum(c["flagged"] for c in attack), total),
            "attacks_called_attack": _rate(sum(c["any_attack"] for c in attack), total),
            "benign_packets": benign["packets"],
            "benign_flagged": _rate(benign["flagged"], benign["packets"]),
        }
    gaps: dict[str, float] = {}
    for truth, entry in table.items():
        for figure in ("recall", "flagged"):
            four, six = entry["ipv4"][figure], entry["ipv6"][figure]
            if four is not None and six is not None:
                gaps[f"{truth}.{figure}"] = round(six - four, 2)
    for figure in ("attacks_flagged", "attacks_called_attack", "benign_flagged"):
        four, six = binary["ipv4"][figure], binary["ipv6"][figure]
        if four is not None and six is not None:
            gaps[f"binary.{figure}"] = round(six - four, 2)
    widest = max((abs(g) for g in gaps.values()), default=0.0)
    return {
        "classes": table,
        "binary": binary,
        "gaps_points": gaps,
        "widest_gap_points": widest,
        "goal_points": GOAL_POINTS,
        "goal_met": widest <= GOAL_POINTS,
    }


def lines(result: dict[str, Any]) -> list[str]:
    """The comparison as a Markdown table, then the binary figures and the verdict."""
    out = [
        "| class | IPv4 packets | IPv6 packets | recall v4 | recall v6 | flagged v4 | flagged v6 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for truth, entry in result["classes"].items():
        four, six = entry["ipv4"], entry["ipv6"]
        out.append(
            f"| {truth} | {four['packets']:,} | {six['packets']:,} | {four['recall']} | "
            f"{six['recall']} | {four['flagged']} | {six['flagged']} |"
        )
    for family in ("ipv4", "ipv6"):
        b = result["binary"][family]
        out.append(
            f"{family}: attacks flagged {b['attacks_flagged']}% of {b['attack_packets']:,}, "
            f"called an attack {b['attacks_called_attack']}%; benign flagged "
            f"{b['benign_flagged']}% of {b['benign_packets']:,}"
        )
    verdict = "met" if result["goal_met"] else "not met"
    out.append(
        f"widest gap {result['widest_gap_points']} points (goal {result['goal_points']}): {verdict}"
    )
    return out
