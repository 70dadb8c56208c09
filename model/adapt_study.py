"""``amlhp model adapt-study``: does learning a site quiet it without unlearning attacks?

Measured the way the issue states it, on models that never met the data they are judged
on: the fold models of ``amlhp model cross-source --models-dir`` (each trained *and*
calibrated without one source).

* **Benign.** For each source with benign packets, its fold model is adapted on the first
  half of each capture file's time (the window an operator declares normal) and judges the
  second half: the share called malicious (and uncertain) before and after.
* **Attacks.** For each source with attack packets, its fold model is adapted on the first
  half of *each* benign source in turn, and judges the held-out source's attack packets:
  the share called malicious before and after, per benign source. Here the benign source
  was in the fold model's training, so its window looks normal already and adapting
  changes little; hence also:
* **Attacks at a new site.** Each benign source's fold model (the one that never saw
  it), adapted on its first half as above, judges every *other* source's attack packets.
  Those attacks were in that model's training (its base rate is high), but the adaptation
  is the real one of a new network, with its large ceilings: the drop is what learning
  that site costs the attacks the model knows.

The guard's reference attacks never come from the source judged (nor from the site for
the new-site table), so no figure was tuned on its own data. The ways of adapting compared
(:data:`METHODS`): moving the gateway's band until at most 1% of its window is called
malicious; the kind memory with its score ceilings alone; guarded against known attacks;
and guarded with the class condition as well (a packet is site-normal only if the model
gave it a class it gave its kind in the window): what ``amlhp model adapt`` publishes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.encoders.layout import EncoderConfig
from amlhp.markdown import markdown_table
from amlhp.model.artifact import read_metadata
from amlhp.model.attack_reference import AttackReference
from amlhp.model.cross_source import source_of
from amlhp.model.dataset import LabelledPackets, cap_rows, load_labelled
from amlhp.model.decision import UNCERTAIN, Assessment, benign_mask
from amlhp.model.exceptions import DatasetError
from amlhp.model.labels import load_labels
from amlhp.model.scorer import Scorer, load_scorer
from amlhp.model.site import KindMemory, called_malicious, guard
from amlhp.model.site_kinds import packet_kinds

METHODS: tuple[str, ...] = ("band", "kinds", "kinds+guard", "kinds+class+guard")
#: the band method's target: at most this share of the window called malicious
BAND_TARGET = 0.01
IntArray = npt.NDArray[np.int64]
EventFn = Callable[[str], None]


def first_half(data: LabelledPackets) -> npt.NDArray[np.bool_]:
    """Per row: whether its packet lies in the first half of its capture file's time."""
    if data.ts_ns is None:
        raise DatasetError("the labelled packets carry no capture times")
    out = np.zeros(len(data), bool)
    for f in np.unique(data.file_ids).tolist():
        rows = data.file_ids == f
        ts = data.ts_ns[rows]
        out[rows] = ts <= (int(ts.min()) + int(ts.max())) // 2
    return out


@dataclass
class _Judged:
    """One fold model's view of some rows: its assessment and their kinds."""

    rows: IntArray
    assessment: Assessment
    kinds: npt.NDArray[np.uint64]

    def of(self, rows: IntArray) -> tuple[Assessment, npt.NDArray[np.uint64]]:
        at = np.searchsorted(self.rows, rows)
        return self.assessment.take(at), self.kinds[at]


def _judge(scorer: Scorer, data: LabelledPackets, rows: IntArray) -> _Judged:
    rows = np.unique(rows)
    p = scorer.payload_bytes
    assessment = scorer.assess(data.header[rows], data.payload[rows, :p])
    return _Judged(rows, assessment, packet_kinds(data.header[rows], data.payload[rows, :p]))


def _reference(
    scorer: Scorer, data: LabelledPackets, rows: IntArray, per_class: int, seed: int
) -> tuple[Assessment, npt.NDArray[np.uint64], npt.NDArray[np.int16]]:
    """Known attacks drawn from ``rows`` as the guard reads them: the fold model's
    assessment, their kinds, their class ids."""
    ref = AttackReference.from_packets(data, rows, per_class, seed)
    return scorer.assess(ref.header, ref.payload), packet_kinds(ref.header, ref.payload), ref.labels


def _row(source: str, adapted_on: str, packets: int, result: dict[str, Any]) -> dict[str, Any]:
    """One row of an attack table."""
    return {
        "source": source,
        "adapted_on": adapted_on,
        "attack_packets": packets,
        "restricted_kinds": result["restricted_kinds"],
        **_shares(result["decisions"]),
    }


def _band_decisions(scorer: Scorer, window: Assessment, judged: Assessment) -> npt.NDArray[Any]:
    """The alternative: the gateway's band raised until at most BAND_TARGET of its window
    is called malicious (never lowered)."""
    policy = scorer.policy
    inside = ~policy.out_of_distribution(window.ood_score)
    scores = window.malicious_score[inside]
    cut = float(np.quantile(scores, 1 - BAND_TARGET)) if scores.size else policy.malicious_at
    cut = min(1.0, np.nextafter(cut, 2.0))
    shifted = policy.with_band(max(policy.benign_below, cut), max(policy.malicious_at, cut))
    return shifted.decide(judged.malicious_score, judged.ood_score)


def _adapted(
    scorer: Scorer, window: tuple[Assessment, Any], judged: tuple[Assessment, Any],
    reference: tuple[Assessment, Any, Any], classes: list[str], min_count: int,
) -> dict[str, Any]:  # fmt: skip
    """Decisions on ``judged`` after adapting on ``window``, by every method."""
    (wa, wk), (ja, jk), (ra, rk, rl) = window, judged, reference
    memory = KindMemory.learn(wk, wa.malicious_score, wa.class_ids, min_count)
    any_class, _ = guard(memory.any_class(), rk, ra, rl, classes)
    guarded, report = guard(memory, rk, ra, rl, classes)
    return {
        "decisions": {
            "base": ja.decision,
            "band": _band_decisions(scorer, wa, ja),
            "kinds": memory.any_class().judge(jk, ja),
            "kinds+guard": any_class.judge(jk, ja),
            "kinds+class+guard": guarded.judge(jk, ja),
        },
        "kinds_learnt": len(memory),
        "restricted_kinds": report.restricted_kinds,
    }


def _shares(decisions: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, d in decisions.items():
        out[name] = {
            "malicious": round(called_malicious(d), 4),
            "uncertain": round(float(np.mean(d == UNCERTAIN)) if d.size else 0.0, 4),
        }
    return out


def run_adapt_study(
    labels_path: Path, models_dir: Path, out_dir: Path, *, min_count: int = 2,
    reference_per_class: int = 100, max_attack_per_class: int = 3000, seed: int = 0,
    on_event: EventFn | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The study of the module docstring; writes ``adapt-study.json`` and ``.md``."""
    say = on_event or (lambda _msg: None)
    started = time.perf_counter()
    fold_paths = sorted(models_dir.glob("*.json"))
    if not fold_paths:
        raise DatasetError(f"{models_dir}: no fold models (amlhp model cross-source --models-dir)")
    first_meta = read_metadata(fold_paths[0])
    encoding = first_meta["encoding"]
    config = EncoderConfig(
        payload_bytes=int(encoding["payload_bytes"]), mask_fields=tuple(encoding["mask_fields"])
    )
    say(f"encoding the labelled captures of {labels_path}")
    data = load_labelled(load_labels(labels_path), config)
    benign = benign_mask(data.classes)[data.labels]
    source = np.array([source_of(f) for f in data.files])[data.file_ids]
    early = first_half(data)
    sites = sorted({str(s) for s in np.unique(source[benign])})
    windows = {s: np.flatnonzero(benign & early & (source == s)) for s in sites}
    doc: dict[str, Any] = {
        "labels": str(labels_path),
        "models_dir": str(models_dir),
        "min_count": min_count,
        "reference_per_class": reference_per_class,
        "band_target": BAND_TARGET,
        "benign": [],
        "attacks": [],
        "new_site_attacks": [],
    }
    for path in fold_paths:
        held = str(read_metadata(path).get("held_out_source", path.stem))
        scorer = load_scorer(path)
        others = np.flatnonzero(source != held)
        reference = _reference(scorer, data, others, reference_per_class, seed)
        attack_rows = np.flatnonzero(~benign & (source == held))
        if attack_rows.size:
            attack_rows = cap_rows(attack_rows, data.labels, max_attack_per_class, seed)
        test_rows = np.flatnonzero(benign & ~early & (source == held))
        elsewhere = {
            a: cap_rows(np.flatnonzero(~benign & (source == a)), data.labels,
                        max_attack_per_class, seed)
            for a in sorted({str(x) for x in np.unique(source[~benign])} - {held})
        } if held in windows else {}  # fmt: skip
        needed = np.concatenate([attack_rows, test_rows, *windows.values(), *elsewhere.values()])
        judged = _judge(scorer, data, needed)
        say(f"{held}: fold model {scorer.version}, {needed.size} packets judged")
        if test_rows.size and held in windows:
            result = _adapted(
                scorer, judged.of(windows[held]), judged.of(test_rows), reference,
                data.classes, min_count,
            )  # fmt: skip
            doc["benign"].append(
                {
                    "source": held,
                    "window_packets": int(windows[held].size),
                    "test_packets": int(test_rows.size),
                    "kinds_learnt": result["kinds_learnt"],
                    "restricted_kinds": result["restricted_kinds"],
                    **_shares(result["decisions"]),
                }
            )
            say(f"{held}: benign second half {doc['benign'][-1]}")
            for other, rows in elsewhere.items():
                outside = np.flatnonzero((source != held) & (source != other))
                result = _adapted(
                    scorer, judged.of(windows[held]), judged.of(rows),
                    _reference(scorer, data, outside, reference_per_class, seed),
                    data.classes, min_count,
                )  # fmt: skip
                doc["new_site_attacks"].append(_row(other, held, int(rows.size), result))
        if attack_rows.size:
            for site in sites:
                result = _adapted(
                    scorer, judged.of(windows[site]), judged.of(attack_rows), reference,
                    data.classes, min_count,
                )  # fmt: skip
                doc["attacks"].append(_row(held, site, int(attack_rows.size), result))
            say(f"{held}: attacks judged after adapting on each of {len(sites)} sites")
        doc["seconds"] = round(time.perf_counter() - started, 1)
        _write(doc, out_dir)
    return doc


def _attack_table(rows: list[dict[str, Any]], title: str, by_site: bool = False) -> list[str]:
    """One attack table: percent called malicious, then flagged (malicious or uncertain),
    and the drops from base in brackets."""
    first, second = ("adapted on", "attack source") if by_site else ("attack source", "adapted on")
    keyed = sorted(rows, key=lambda r: (r["adapted_on"], r["source"])) if by_site else rows
    body = []
    for r in keyed:
        m0, f0 = _flagged(r["base"])
        cells = []
        for c in METHODS:
            m, f = _flagged(r[c])
            cells.append(f"{_pct(m)} / {_pct(f)} ({_pct(m0 - m)} / {_pct(f0 - f)})")
        a, b = (r["adapted_on"], r["source"]) if by_site else (r["source"], r["adapted_on"])
        body.append([a, b, f"{r['attack_packets']:,}", f"{_pct(m0)} / {_pct(f0)}", *cells])
    header = [first, second, "packets", "base", *METHODS]
    return [
        "",
        f"{title}: percent called malicious / flagged (malicious or uncertain); the drops "
        "from base in brackets.",
        "",
        *markdown_table(header, body, right=range(2, len(header))),
    ]


def _flagged(shares: dict[str, float]) -> tuple[float, float]:
    """(called malicious, flagged: malicious or uncertain)."""
    return shares["malicious"], shares["malicious"] + shares["uncertain"]


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def adapt_markdown(doc: dict[str, Any]) -> str:
    """The study's two tables (benign second halves; attacks after adapting on each site)."""
    cols = ["base", *METHODS]
    header = ["source", "window", "judged", "kinds learnt", "restricted", *cols]
    body = [
        [r["source"], f"{r['window_packets']:,}", f"{r['test_packets']:,}",
         f"{r['kinds_learnt']:,}", f"{r['restricted_kinds']:,}",
         *(f"{_pct(r[c]['malicious'])} ({_pct(r[c]['uncertain'])})" for c in cols)]
        for r in doc["benign"]
    ]  # fmt: skip
    lines = [
        "Benign: adapted on the first half of each capture's time, judged on the second half "
        "(percent of packets called malicious; uncertain in brackets).",
        "",
        *markdown_table(header, body, right=range(1, len(header))),
    ]
    lines += _attack_table(
        doc["attacks"],
        "Attacks: each attack source's packets, judged by the model that never saw that "
        "source, after adapting on each benign source's first half",
    )
    lines += _attack_table(
        doc.get("new_site_attacks", []),
        "Attacks at a new site: each benign source's own fold model (it never saw that "
        "source) adapted on its first half, judging the other sources' attack packets "
        "(in that model's training)",
        by_site=True,
    )
    return "\n".join(lines) + "\n"


def _write(doc: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "adapt-study.json").write_text(json.dumps(doc, indent=2) + "\n")
    (out_dir / "adapt-study.md").write_text(adapt_markdown(doc))
