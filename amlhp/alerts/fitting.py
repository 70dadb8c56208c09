"""Thresholds fitted by leaving one source out, so that every published figure is measured
on a source that did not tune them.

The candidates are a small grid over the three knobs of
:class:`~amlhp.alerts.policy.AlertPolicy` that matter (:func:`candidates`): one factor on
every behaviour threshold (``behaviour_scale``), the model's minimum share of a host's
packets at the minutes and hour scales (``model_min_share``), and one factor on the
model's packet counts there (``model_packets_scale``). The grid is absolute, so a re-run
chooses the same values whatever the current defaults. For each
source S (the lab demo capture, each benign public source, each public attack folder),
the candidate is chosen on *the other sources* only (:func:`choose`): among those clean
there (at most ``max_fp_rate`` false incidents per device-hour on every other benign
source, no incident on a benign lab host), the one that detects most other attack files
and lab scenarios, the least sensitive on ties. S's figures are then those of its own
fold's candidate (:func:`leave_one_source_out`). The shipped defaults are the candidate
chosen on all sources; their own figures are reported beside, marked as such.

The corpus is scored once (:class:`~amlhp.alerts.evaluate.Corpus`, verdicts do not
depend on the policy) and can be kept between runs as Arrow IPC files (``--cache``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather

from amlhp.alerts.evaluate import Corpus, Evaluation, figures
from amlhp.alerts.policy import AlertPolicy
from amlhp.wire.packets import ENCODED_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    behaviour: float  # factor on the behaviour thresholds (higher: less sensitive)
    model_share: float
    model_packets: float  # factor on the model's packet counts at minutes and hour

    def policy(self, base: AlertPolicy) -> AlertPolicy:
        return dataclasses.replace(
            base,
            behaviour_scale=self.behaviour,
            model_min_share=self.model_share,
            model_packets_scale=self.model_packets,
        )

    def sensitivity(self) -> tuple[float, ...]:
        """Sort key: the least sensitive candidate first."""
        return (-self.behaviour, -self.model_share, -self.model_packets)


def candidates() -> list[Candidate]:
    """45 candidates: behaviour thresholds x 0.5 .. 2; the model's minimum share 0.3,
    0.5, 0.7; its packet counts x 0.5, 1, 2."""
    grid = itertools.product((0.5, 0.75, 1.0, 1.5, 2.0), (0.3, 0.5, 0.7), (0.5, 1.0, 2.0))
    return [Candidate(b, s, m) for b, s, m in grid]


@dataclass(frozen=True)
class SourceScore:
    """One policy's figures on one source, as the selection reads them."""

    detected: int  # attack files detected, or lab scenarios with an incident
    clean: bool  # benign: within the false-incident budget; lab: no benign-host incident


def score_sources(result: Evaluation, max_fp_rate: float) -> dict[str, SourceScore]:
    scores = {
        "lab": SourceScore(
            result.lab["scenarios_with_incident"], not result.lab["benign_host_incidents"]
        )
    }
    for row in result.benign:
        rate = row["per_device_hour"] or 0.0
        scores[row["source"]] = SourceScore(0, rate <= max_fp_rate)
    for row in result.attacks:
        prev = scores.get(row["source"], SourceScore(0, True))
        scores[row["source"]] = SourceScore(prev.detected + int(row["detected"]), True)
    return scores


def choose(table: dict[Candidate, dict[str, SourceScore]], held_out: str | None) -> Candidate:
    """The candidate for a fold: clean on every source but ``held_out``, most detections
    there, the least sensitive on ties (a fold where none is clean: the least sensitive)."""

    def usable(c: Candidate) -> bool:
        return all(s.clean for src, s in table[c].items() if src != held_out)

    def detected(c: Candidate) -> int:
        return sum(s.detected for src, s in table[c].items() if src != held_out)

    pool = [c for c in table if usable(c)] or list(table)
    return min(pool, key=lambda c: (-detected(c), c.sensitivity()))


@dataclass
class Fit:
    chosen: dict[str, Candidate]  # held-out source -> its fold's candidate
    overall: Candidate  # chosen on every source: the shipped defaults
    results: dict[Candidate, Evaluation]
    max_fp_rate: float = 0.1

    def held_out_figures(self) -> Evaluation:
        """Each source's figures under its own fold's candidate."""
        lab = self.results[self.chosen["lab"]].lab
        benign = _pick(self.results, self.chosen, "benign", "source")
        return Evaluation(lab, benign, _pick(self.results, self.chosen, "attacks", "source"))


def _pick(
    results: dict[Candidate, Evaluation], chosen: dict[str, Candidate], part: str, key: str
) -> list[dict[str, Any]]:
    """The rows of ``part`` whose source is held out, each from its fold's result."""
    first = next(iter(results.values()))
    out = []
    for i, row in enumerate(getattr(first, part)):
        fold = chosen[row[key]]
        out.append(getattr(results[fold], part)[i])
    return out


_CORPUS: Corpus | None = None  # the corpus the forked workers read (not pickled)


def _figures_of(job: tuple[Candidate, AlertPolicy]) -> tuple[Candidate, Evaluation]:
    assert _CORPUS is not None
    return job[0], figures(_CORPUS, job[0].policy(job[1]))


def leave_one_source_out(
    corpus: Corpus,
    base: AlertPolicy,
    max_fp_rate: float = 0.1,
    grid: list[Candidate] | None = None,
    workers: int = 1,
) -> Fit:
    """Run every candidate over the corpus (``workers`` forked processes) and choose one
    per held-out source."""
    global _CORPUS
    jobs = [(c, base) for c in grid or candidates()]
    _CORPUS = corpus
    try:
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                results = dict(pool.map(_figures_of, jobs))
        else:
            results = dict(map(_figures_of, jobs))
    finally:
        _CORPUS = None
    table = {c: score_sources(r, max_fp_rate) for c, r in results.items()}
    chosen = {source: choose(table, source) for source in corpus.sources()}
    return Fit(chosen, choose(table, None), results, max_fp_rate)


def save_corpus(corpus: Corpus, folder: Path) -> None:
    """The scored corpus as Arrow IPC files and an index (``--cache``)."""
    folder.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"version": corpus.version, "encoded": ENCODED_VERSION,
                             "labels": str(corpus.labels),
                             "hours": corpus.hours, "attack_start": corpus.attack_start,
                             "files": {}}  # fmt: skip
    parts = {("lab", "lab"): corpus.lab}
    parts |= {("benign/" + s, f): b for s, files in corpus.benign.items() for f, b in files.items()}
    parts |= {("attack", f): b for f, b in corpus.attacks.items()}
    for n, ((group, name), batches) in enumerate(parts.items()):
        path = folder / f"{n}.arrow"
        if batches:
            feather.write_feather(pa.Table.from_batches(batches), path, compression="uncompressed")
        index["files"][str(n)] = [group, name, bool(batches)]
    (folder / "index.json").write_text(json.dumps(index))


def load_cached_corpus(folder: Path, version: str) -> Corpus | None:
    """The corpus saved by :func:`save_corpus`, or ``None`` (absent, or another model, or
    unreadable: a warning, and the caller scores the captures again)."""
    index_path = folder / "index.json"
    if not index_path.exists():
        return None
    try:
        return _read_corpus(folder, json.loads(index_path.read_text()), version)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ArrowInvalid is a ValueError
        log.warning("ignoring the unreadable corpus cache %s (%s); scoring again", folder, exc)
        return None


def _read_corpus(folder: Path, index: dict[str, Any], version: str) -> Corpus | None:
    if index["version"] != version or index.get("encoded") != ENCODED_VERSION:
        return None  # another model, or records of another encoding (the ARP columns)
    corpus = Corpus(version, [], Path(index["labels"]), hours=index["hours"],
                    attack_start=index["attack_start"])  # fmt: skip
    for n, (group, name, present) in index["files"].items():
        batches = feather.read_table(folder / f"{n}.arrow").to_batches() if present else []
        if group == "lab":
            corpus.lab = batches
        elif group == "attack":
            corpus.attacks[name] = batches
        else:
            corpus.benign.setdefault(group.split("/", 1)[1], {})[name] = batches
    return corpus
