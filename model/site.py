"""Learning a site: a per-gateway profile of its normal traffic, layered over the base model.

Why: a network the model never saw reads partly as an attack (one smart-lock hub's packets
were 44% "malicious"), and every deployed detector learns the site it runs on. The ways
measured (``amlhp model adapt-study``, docs/model.md#learning-a-site): moving the
gateway's decision band until its window is quiet (it hid up to 79 points of known
attacks), and this module's way, a *kind memory*:

* **learn**: for the window the operator declares normal, count each packet kind
  (:func:`amlhp.model.site_kinds.packet_kinds`) and keep, per kind seen at least
  ``min_count`` times, the highest malicious score the base model gave one of them (its
  *ceiling*) and the classes it gave them;
* **guard**: a reference set of known attacks (:mod:`amlhp.model.attack_reference`) is
  judged with the profile; where a known attack packet would be let through, its kind's
  ceiling is lowered below it. What was restricted is listed. The profile is then
  evaluated on the same set and refused if any attack class loses more than
  ``max_drop`` of its packets called malicious;
* **judge**: a packet of an adapted gateway whose kind is in the profile, whose class is
  one the model gave that kind in the window and whose score is at most the kind's
  ceiling is *site-normal*: a ``malicious`` or ``uncertain`` decision becomes ``benign``.
  Its class, probabilities and malicious score stay the model's, so the record still says
  what the model thought; the verdict's ``model_version`` names the profile.

The model's weights are not touched: a profile is a few kilobytes per gateway, judged in
one vectorised lookup, and a profile learnt for another base model is not applied
(:meth:`SiteProfiles.load_dir`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from amlhp.model.artifact import artifact_paths, verify_locked, write_locked
from amlhp.model.decision import BENIGN, MALICIOUS, Assessment
from amlhp.model.exceptions import ArtifactError, ModelError

FORMAT = "amlhp-site"
FORMAT_VERSION = 1
#: a kind must be seen this often in the window to count as the site's normal
MIN_COUNT = 2
#: the most an attack class of the reference set may lose (share called malicious)
MAX_DROP = 0.02

U64 = npt.NDArray[np.uint64]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class KindMemory:
    """Kinds (sorted), how often each was seen, each one's score ceiling, and the classes
    the model gave its packets (a bit per class id)."""

    kinds: U64
    counts: npt.NDArray[np.uint32]
    ceilings: F32
    classes: U64

    @classmethod
    def learn(
        cls, kinds: U64, scores: npt.ArrayLike, class_ids: npt.ArrayLike,
        min_count: int = MIN_COUNT,
    ) -> KindMemory:  # fmt: skip
        """The memory of a window's packets (their kinds, base malicious scores and
        classes; rows without a score, ARP frames, are left out)."""
        tally = KindTally()
        tally.add(kinds, scores, class_ids)
        return tally.memory(min_count)

    def __len__(self) -> int:
        return int(self.kinds.size)

    def any_class(self) -> KindMemory:
        """The same memory without the class condition (the study's comparison)."""
        return replace(self, classes=np.full(self.kinds.size, ALL_CLASSES, np.uint64))

    def lookup(self, kinds: U64) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Whether each kind is known, and its index (valid where known)."""
        if self.kinds.size == 0:
            return np.zeros(kinds.shape, bool), np.zeros(kinds.shape, np.int64)
        at = np.minimum(np.searchsorted(self.kinds, kinds), self.kinds.size - 1)
        return self.kinds[at] == kinds, at

    def normal(
        self, kinds: U64, scores: npt.ArrayLike, class_ids: npt.ArrayLike
    ) -> npt.NDArray[np.bool_]:
        """Site-normal packets: a known kind, a class the model gave that kind in the
        window, scored at most as high as the kind's ceiling."""
        known, at = self.lookup(kinds)
        s = np.asarray(scores, np.float32)
        bit = _class_bits(class_ids)
        return known & (s <= self.ceilings[at]) & ((self.classes[at] & bit) != 0)

    def restrict(
        self, kinds: U64, scores: npt.ArrayLike, class_ids: npt.ArrayLike
    ) -> tuple[KindMemory, int]:
        """Lower ceilings so that none of these packets (known attacks) is site-normal;
        returns the memory and how many kinds were restricted."""
        s = np.asarray(scores, np.float32)
        hit = self.normal(kinds, s, class_ids)
        if not hit.any():
            return self, 0
        _, at = self.lookup(kinds[hit])
        lowest = np.full(self.kinds.size, np.inf, np.float32)
        np.minimum.at(lowest, at, s[hit])
        below = np.nextafter(lowest, np.float32(-np.inf)).astype(np.float32)
        ceilings = np.minimum(self.ceilings, below)
        restricted = int(np.count_nonzero(ceilings < self.ceilings))
        return replace(self, ceilings=ceilings), restricted

    def demoted(
        self, kinds: U64, assessment: Assessment, flagged: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        """Of the ``flagged`` rows of ``assessment`` (``kinds``: theirs), the site-normal
        ones, whose malicious or uncertain decision becomes benign."""
        s, c = assessment.malicious_score[flagged], assessment.class_ids[flagged]
        return flagged[self.normal(kinds, s, c)]

    def judge(self, kinds: U64, assessment: Assessment) -> npt.NDArray[np.int8]:
        """The decisions with site-normal malicious/uncertain packets made benign."""
        decision = assessment.decision.copy()
        flagged = np.flatnonzero(decision != BENIGN)
        decision[self.demoted(kinds[flagged], assessment, flagged)] = BENIGN
        return decision


#: every class bit set: a kind whose class is not checked
ALL_CLASSES = np.uint64(0xFFFFFFFFFFFFFFFF)
#: class ids a memory can hold (one bit each)
MAX_CLASSES = 64


def _class_bits(class_ids: npt.ArrayLike) -> U64:
    ids = np.asarray(class_ids, np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= MAX_CLASSES):
        raise ModelError(f"a site profile holds class ids 0-{MAX_CLASSES - 1}")
    return np.left_shift(np.uint64(1), ids.astype(np.uint64))


@dataclass
class KindTally:
    """Per kind: how many packets, the highest malicious score and the classes given,
    merged batch by batch (memory grows with the kinds, not the packets)."""

    kinds: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))
    counts: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    ceilings: F32 = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: U64 = field(default_factory=lambda: np.zeros(0, np.uint64))

    def add(self, kinds: U64, scores: npt.ArrayLike, class_ids: npt.ArrayLike) -> None:
        s = np.asarray(scores, np.float32)
        keep = np.isfinite(s)
        ids = np.asarray(class_ids)[keep]
        all_kinds = np.concatenate([self.kinds, kinds[keep]])
        all_counts = np.concatenate([self.counts, np.ones(int(keep.sum()), np.int64)])
        all_scores = np.concatenate([self.ceilings, s[keep]])
        all_classes = np.concatenate([self.classes, _class_bits(ids)])
        uniq, inverse = np.unique(all_kinds, return_inverse=True)
        counts = np.zeros(uniq.size, np.int64)
        np.add.at(counts, inverse, all_counts)
        ceilings = np.full(uniq.size, -np.inf, np.float32)
        np.maximum.at(ceilings, inverse, all_scores)
        classes = np.zeros(uniq.size, np.uint64)
        np.bitwise_or.at(classes, inverse, all_classes)
        self.kinds, self.counts, self.ceilings, self.classes = uniq, counts, ceilings, classes

    def memory(self, min_count: int = MIN_COUNT) -> KindMemory:
        often = self.counts >= min_count
        return KindMemory(
            self.kinds[often],
            self.counts[often].astype(np.uint32),
            self.ceilings[often],
            self.classes[often],
        )


@dataclass(frozen=True)
class SiteProfile:
    """A kind memory for some gateways, learnt over one base model, with its record."""

    memory: KindMemory
    gateways: tuple[str, ...]
    base_version: str
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", f"{self.base_version}+site"))

    def save(self, path: str | Path, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write NAME.json + NAME.safetensors, locked to each other like a model artifact.
        ``record`` is what the profile was adapted on (window, fingerprint, refusals...)."""
        json_path, weights_path = artifact_paths(path)
        digest = hashlib.sha256()
        memory = self.memory
        for array in (memory.kinds, memory.counts, memory.ceilings, memory.classes):
            digest.update(array.tobytes())
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": f"{self.base_version}+site-{stamp}-{digest.hexdigest()[:12]}",
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "gateways": list(self.gateways),
            "base_model": {"version": self.base_version},
            "kinds": len(self.memory),
            "weights_file": weights_path.name,
            **dict(record),
        }
        arrays: dict[str, npt.NDArray[Any]] = {
            "kinds": self.memory.kinds,
            "counts": self.memory.counts,
            "ceilings": self.memory.ceilings,
            "classes": self.memory.classes,
        }
        return write_locked(json_path, weights_path, arrays, meta)

    @classmethod
    def load(cls, path: str | Path) -> SiteProfile:
        """Verify and read a saved profile (no pickle: JSON and safetensors)."""
        from safetensors.numpy import load_file

        json_path, weights_path = artifact_paths(path)
        try:
            meta = json.loads(json_path.read_text())
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{json_path}: unreadable site profile ({exc})") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ArtifactError(f"{json_path}: not an {FORMAT} file")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ArtifactError(f"{json_path}: site profile format {meta.get('format_version')}")
        verify_locked(json_path, weights_path, meta)
        arrays = load_file(str(weights_path))
        try:
            memory = KindMemory(
                arrays["kinds"].astype(np.uint64),
                arrays["counts"].astype(np.uint32),
                arrays["ceilings"].astype(np.float32),
                arrays["classes"].astype(np.uint64),
            )
            gateways = tuple(str(g) for g in meta["gateways"])
            base = str(meta["base_model"]["version"])
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"{json_path}: site profile lacks {exc}") from exc
        sizes = {a.size for a in (memory.kinds, memory.counts, memory.ceilings, memory.classes)}
        if len(sizes) > 1:
            raise ArtifactError(f"{json_path}: site profile arrays differ in length")
        if memory.kinds.size > 1 and not np.all(np.diff(memory.kinds.astype(np.float64)) >= 0):
            raise ArtifactError(f"{json_path}: site profile kinds are not sorted")
        return cls(memory, gateways, base, meta)


@dataclass(frozen=True)
class SiteProfiles:
    """The profiles a scorer serves, by gateway; one of them per gateway at most."""

    by_gateway: Mapping[str, SiteProfile] = field(default_factory=dict)
    #: profiles found but not served, with why (another base model, a gateway twice...)
    skipped: tuple[str, ...] = ()

    @classmethod
    def load_dir(cls, directory: Path | None, base_version: str) -> SiteProfiles:
        """Every ``*.json`` profile under ``directory`` learnt over ``base_version``; a
        profile that does not verify raises (the caller keeps what it served before)."""
        if directory is None or not directory.is_dir():
            return cls()
        found: dict[str, SiteProfile] = {}
        skipped: list[str] = []
        for path in sorted(directory.glob("*.json")):
            profile = SiteProfile.load(path)
            if profile.base_version != base_version:
                skipped.append(f"{path.name}: learnt over {profile.base_version}")
                continue
            for gateway in profile.gateways:
                if gateway in found:
                    skipped.append(f"{path.name}: gateway {gateway} already has a profile")
                    continue
                found[gateway] = profile
        return cls(found, tuple(skipped))

    def __bool__(self) -> bool:
        return bool(self.by_gateway)

    @property
    def versions(self) -> list[str]:
        return sorted({p.version for p in self.by_gateway.values()})

    def judge(
        self, gateways: Iterable[Any], header: npt.NDArray[np.uint8],
        payload: npt.NDArray[np.uint8], assessment: Assessment, base_version: str,
    ) -> tuple[Assessment, npt.NDArray[np.object_]]:  # fmt: skip
        """The assessment with each adapted gateway's profile applied, and per row the
        version that judged it (the base model's, or a profile's)."""
        from amlhp.model.site_kinds import packet_kinds

        names = np.asarray(list(gateways), dtype=object)
        versions = np.full(names.size, base_version, dtype=object)
        if not self.by_gateway or names.size == 0:
            return assessment, versions
        decision = assessment.decision.copy()
        for profile in {id(p): p for p in self.by_gateway.values()}.values():
            rows = np.flatnonzero(np.isin(names, list(profile.gateways)))
            versions[rows] = profile.version
            flagged = rows[decision[rows] != BENIGN]  # kinds of these only: the hot path
            kinds = packet_kinds(header[flagged], payload[flagged])
            decision[profile.memory.demoted(kinds, assessment, flagged)] = BENIGN
        return replace(assessment, decision=decision), versions


def called_malicious(decision: npt.NDArray[np.int8]) -> float:
    """Share of decisions that are ``malicious`` (0 for none)."""
    return float(np.mean(decision == MALICIOUS)) if decision.size else 0.0


@dataclass(frozen=True)
class GuardReport:
    """What guarding a memory against known attacks did, and how it then judges them."""

    restricted_kinds: int
    #: per attack class: packets, share called malicious by the base model and with the site
    per_class: dict[str, dict[str, float]]

    @property
    def worst(self) -> tuple[str | None, float]:
        """The attack class losing most of its malicious calls, and by how much."""
        drops = {c: f["before"] - f["after"] for c, f in self.per_class.items()}
        if not drops:
            return None, 0.0
        name = max(drops, key=lambda c: drops[c])
        return name, drops[name]

    def as_dict(self) -> dict[str, Any]:
        name, drop = self.worst
        return {
            "restricted_kinds": self.restricted_kinds,
            "worst_class": name,
            "worst_drop": round(drop, 4),
            "per_class": self.per_class,
        }


def guard(
    memory: KindMemory, kinds: U64, assessment: Assessment, labels: npt.NDArray[Any],
    classes: list[str], *, restrict: bool = True,
) -> tuple[KindMemory, GuardReport]:  # fmt: skip
    """Restrict ``memory`` so that none of these known attack packets (their kinds, the
    base model's assessment, class ids into ``classes``) becomes site-normal unless the
    base model already called it benign, then judge them with it, per class."""
    restricted = 0
    if restrict:
        flagged = assessment.decision != BENIGN
        memory, restricted = memory.restrict(
            kinds[flagged], assessment.malicious_score[flagged], assessment.class_ids[flagged]
        )
    after = memory.judge(kinds, assessment)
    per_class: dict[str, dict[str, float]] = {}
    for c in np.unique(labels).tolist():
        rows = labels == c
        per_class[classes[int(c)]] = {
            "packets": int(rows.sum()),
            "before": round(called_malicious(assessment.decision[rows]), 4),
            "after": round(called_malicious(after[rows]), 4),
        }
    return memory, GuardReport(restricted, per_class)
