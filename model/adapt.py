"""``amlhp model adapt``: learn a site from traffic the operator declares normal.

The window's packets (capture files, or a window of the raw topic read through the replay
machinery) are scored by the base model as the stream scores them, and three things are
gathered as they go, in bounded memory: each packet kind's count and highest malicious
score (:class:`KindTally`), the decisions, and the incidents the alert stage would raise on
them (the stream's :class:`~amlhp.alerts.engine.Engine` over the window's verdicts).

Then the rails (:func:`decide`), before anything is written:

* a window in which incidents were raised is refused, and one the base model calls
  malicious beyond ``max_malicious``, unless the operator forces it: both mean the
  "normal" traffic may hold an attack, and learning it would hide the next one;
* the profile is guarded and evaluated on the shipped known attacks
  (:func:`amlhp.model.site.guard`) and refused, forced or not, if an attack class would
  lose more than ``max_drop`` of its packets called malicious.

What the profile was adapted on (window or files, their fingerprint, the base model, the
refusals overridden, the guard's report) is written into it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from amlhp.encoders.arrays import model_inputs
from amlhp.model.attack_reference import AttackReference
from amlhp.model.decision import BENIGN, DECISIONS
from amlhp.model.exceptions import ModelError
from amlhp.model.site import MAX_DROP, MIN_COUNT, KindMemory, KindTally, SiteProfile, guard
from amlhp.model.site_kinds import describe_kind, kind_fields, packet_kinds

#: refuse a window the base model calls malicious on more than this share (unless forced)
MAX_MALICIOUS = 0.5


class AdaptRefused(ModelError):
    """The window or the profile failed a rail; ``reasons`` lists every one."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("adaptation refused: " + "; ".join(reasons))
        self.reasons = reasons


@dataclass
class WindowStats:
    """What the base model made of the window: kinds, decisions, incidents."""

    tally: KindTally = field(default_factory=KindTally)
    decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DECISIONS, 0))
    packets: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    gateways: set[str] = field(default_factory=set)

    def add(self, encoded: pa.RecordBatch | pa.Table, verdicts: pa.RecordBatch | pa.Table) -> None:
        """One batch of the window: the encoded rows and their verdicts, row for row."""
        header, payload, ok = model_inputs(encoded)
        score = verdicts.column("malicious_score").to_numpy(zero_copy_only=False)
        class_ids = verdicts.column("class_id").fill_null(-1).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(ok)
        self.tally.add(packet_kinds(header[rows], payload[rows]), score[rows], class_ids[rows])
        for count in pc.value_counts(verdicts.column("decision")).to_pylist():
            if count["values"] in self.decisions:  # not ARP's not_scored, nor null
                self.decisions[count["values"]] += count["counts"]
        self.packets += verdicts.num_rows
        self.gateways.update(str(g) for g in pc.unique(verdicts.column("gateway")).to_pylist())

    @property
    def called_malicious(self) -> float:
        scored = sum(self.decisions.values())
        return self.decisions["malicious"] / scored if scored else 0.0


def fingerprint(parts: Iterable[Any]) -> str:
    """sha256 of what names the window (files' sha256s, or topic, partitions and offsets)."""
    blob = json.dumps(list(parts), sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Adapted:
    """A profile that passed the rails, and what to record and report of it."""

    profile: SiteProfile
    record: dict[str, Any]


def decide(
    stats: WindowStats,
    *,
    base_version: str,
    gateways: tuple[str, ...],
    assess: Any,
    reference: AttackReference,
    adapted_on: Mapping[str, Any],
    min_count: int = MIN_COUNT,
    max_malicious: float = MAX_MALICIOUS,
    max_drop: float = MAX_DROP,
    force: bool = False,
    restrict: bool = True,
) -> Adapted:
    """Apply the rails (module docstring) and build the profile, or raise
    :class:`AdaptRefused` listing every reason. ``assess(header, payload)`` is the base
    model's :meth:`~amlhp.model.scorer.Scorer.assess`."""
    window_reasons = []
    if stats.incidents:
        named = ", ".join(
            f"{i.get('kind')} on {i.get('host') or i.get('src_ip') or '?'} ({i.get('severity')})"
            for i in stats.incidents[:5]
        )
        window_reasons.append(f"{len(stats.incidents)} incident(s) in the window: {named}")
    if stats.called_malicious > max_malicious:
        window_reasons.append(
            f"the base model calls {stats.called_malicious:.1%} of the window malicious "
            f"(limit {max_malicious:.0%})"
        )
    memory = stats.tally.memory(min_count)
    if len(memory) == 0:
        raise AdaptRefused(
            [f"no packet kind was seen {min_count} times or more in the window "
             f"({stats.packets} packets): nothing to learn"]
        )  # fmt: skip
    if window_reasons and not force:
        raise AdaptRefused([*window_reasons, "use --force to adapt anyway"])
    a = assess(reference.header, reference.payload)
    ref_kinds = packet_kinds(reference.header, reference.payload)
    guarded, report = guard(memory, ref_kinds, a, reference.labels, reference.classes,
                            restrict=restrict)  # fmt: skip
    worst, drop = report.worst
    if drop > max_drop:
        raise AdaptRefused(
            [f"known attacks would be missed: {worst} loses {drop:.1%} of its packets called "
             f"malicious (limit {max_drop:.0%}); not overridable"]
        )  # fmt: skip
    record = {
        "adapted_on": dict(adapted_on),
        "fingerprint": fingerprint([adapted_on]),
        "window": {
            "packets": stats.packets,
            "decisions": dict(stats.decisions),
            "called_malicious": round(stats.called_malicious, 4),
            "incidents": len(stats.incidents),
            "gateways_seen": sorted(stats.gateways),
        },
        "min_count": min_count,
        "forced": bool(window_reasons),
        "refusals_overridden": window_reasons,
        "guard": {**report.as_dict(), "restricted": restricted_kinds(memory, guarded, a, ref_kinds,
                                                                      reference)},
        "limits": {"max_malicious": max_malicious, "max_drop": max_drop},
    }  # fmt: skip
    profile = SiteProfile(guarded, gateways, base_version)
    return Adapted(profile, record)


def restricted_kinds(
    before: KindMemory, after: KindMemory, assessment: Any, ref_kinds: Any,
    reference: AttackReference, limit: int = 20,
) -> list[str]:  # fmt: skip
    """The kinds whose ceiling the guard lowered, as an operator reads them, with the
    known attack classes that made it (at most ``limit``)."""
    lowered = set(before.kinds[after.ceilings < before.ceilings].tolist())
    if not lowered:
        return []
    out: dict[str, set[str]] = {}
    fields = kind_fields(reference.header, reference.payload)
    for i in np.flatnonzero(np.isin(ref_kinds, list(lowered))).tolist():
        if assessment.decision[i] == BENIGN:
            continue
        text = describe_kind(fields[i])
        out.setdefault(text, set()).add(reference.classes[int(reference.labels[i])])
    return [f"{k} (like {', '.join(sorted(v))})" for k, v in sorted(out.items())][:limit]
