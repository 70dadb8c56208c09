"""Evidence fusion: the detectors' findings on one host -> a score per kind, the kind to
raise, its severity, confidence and ATT&CK techniques.

* **Score.** Per kind, the weighted sum of its findings' strengths (each capped at
  :data:`~amlhp.alerts.detectors.MAX_STRENGTH`; a detector's weight is 1 unless the policy
  says otherwise; a beacon alone is half a witness), taking each detector's strongest
  scale. The model is one witness among several: its strongest finding of any kind adds
  ``model_support`` x its strength to every behaviour kind that has a finding of its own,
  so a slow guesser the model also calls malicious needs fewer attempts. The attack flow
  model (``flow_model``, :mod:`amlhp.alerts.flow_evidence`) is a learned witness of the
  same standing: its kind is a class's, and a behaviour detector names the kind over it
  (synthetic SSH guessing whose flows it calls ``scan`` stays ``brute_force``). Only behaviour
  of some weight (``support_from``, half its threshold) gets that support, and a beacon
  counts at most half: regular connections alone are what IoT devices do all day.
* **Raise** at a score of 1: one detector at its threshold, or weaker ones together.
* **Kind.** A kind whose behaviour (with the model's support, without the model's own
  finding of that kind) reaches 1 wins over the model's kinds: an FTP password guesser
  is ``brute_force`` whatever class the model gave its packets, and its regular
  connections do not make it ``c2``. Among those, the highest behaviour score. Where
  only the model reaches 1, a behaviour at ``name_from`` (a quarter of its threshold)
  still names the kind: the first seconds of a guesser are too few attempts to raise
  anything by themselves, but enough to say what the model's packets are.
* **Confidence** ``1 - exp(-score)``: 0.63 at the threshold, 0.95 at three times it.
* **Severity** the kind's base level, one up at a score of
  :data:`~amlhp.alerts.kinds.SEVERE_SCORE` (:func:`~amlhp.alerts.kinds.severity`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from amlhp.alerts.detectors import MAX_STRENGTH, Finding

if TYPE_CHECKING:
    from amlhp.alerts.policy import AlertPolicy
    from amlhp.alerts.profile import Profile
    from amlhp.alerts.state import Incident

MODEL = "model"
FLOW_MODEL = "flow_model"
#: the learned witnesses (the packet model and the attack flow model): their kind is a
#: class's, weaker than a behaviour detector's; each supports the behaviour kinds
LEARNED = frozenset({MODEL, FLOW_MODEL})


@dataclass(frozen=True)
class Verdict:
    """What fusion concludes for one host: the kind to raise (or none) and why."""

    kind: str | None
    score: float
    findings: list[Finding]


def confidence(score: float) -> float:
    """An incident's confidence in [0, 1) from its fused score (1 - e^-score)."""
    return round(1.0 - math.exp(-score), 4)


def strongest(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    """(detector, kind) -> its strongest finding over the scales."""
    best: dict[tuple[str, str], Finding] = {}
    for f in findings:
        key = (f.detector, f.kind)
        if key not in best or f.strength > best[key].strength:
            best[key] = f
    return best


def fuse(findings: list[Finding], policy: AlertPolicy) -> Verdict:
    """The kind to raise for one host from its findings (see the module docstring)."""
    best = strongest(findings)
    behaviour: dict[str, float] = {}  # per kind: behaviour findings (+ the model's support)
    model: dict[str, float] = {}  # per kind: the model's own finding
    hints: dict[str, float] = {}  # per kind: its strongest behaviour, however weak
    for (detector, kind), f in best.items():
        strength = min(f.strength, MAX_STRENGTH) * policy.weight(detector)
        if detector in LEARNED:
            model[kind] = max(model.get(kind, 0.0), strength)
            continue
        hints[kind] = max(hints.get(kind, 0.0), strength)
        if strength >= policy.support_from:
            behaviour[kind] = behaviour.get(kind, 0.0) + strength
    support = policy.model_support * max(model.values(), default=0.0)
    behaviour = {k: s + support for k, s in behaviour.items()}
    total = {k: behaviour.get(k, 0.0) + model.get(k, 0.0) for k in {*behaviour, *model}}
    reaching = {k: s for k, s in total.items() if s >= 1.0}
    if not reaching:
        return Verdict(None, max(total.values(), default=0.0), list(best.values()))
    by_behaviour = {k: behaviour[k] for k in reaching if behaviour.get(k, 0.0) >= 1.0}
    ranked = by_behaviour or reaching
    kind = min(ranked, key=lambda k: (-ranked[k], k))
    score = total[kind]
    if not by_behaviour:  # the model raises it; weaker behaviour may still name its kind
        named = {k: s for k, s in hints.items() if s >= policy.name_from}
        if named:
            kind = min(named, key=lambda k: (-named[k], k))
    used = [f for (d, k), f in best.items() if k == kind or d in LEARNED]
    return Verdict(kind, score, used)


def first_seen(prof: Profile, verdict: Verdict) -> int:
    """The start of the tallies behind a verdict (its widest scale's first packet)."""
    scales = {f.scale for f in verdict.findings}
    for scale in ("hour", "minutes", "seconds"):
        if scale in scales and getattr(prof, scale).first_ns:
            return int(getattr(prof, scale).first_ns)
    return 0


def note_verdict(inc: Incident, verdict: Verdict) -> bool:
    """Keep a verdict's findings on the incident (strongest per detector and scale);
    True when something grew."""
    grew = verdict.score > inc.score + 1e-9
    inc.score = max(inc.score, verdict.score)
    for f in verdict.findings:
        old = inc.findings.get(f.name)
        if old is None or f.strength > old[1] + 1e-9:
            inc.findings[f.name] = [f.kind, round(f.strength, 4), f.facts]
            grew = True
    return grew
