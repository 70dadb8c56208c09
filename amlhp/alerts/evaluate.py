"""How the alert thresholds do on the project's data: the figures of docs/alerts.md.

``amlhp alerts-evaluate`` runs :func:`~amlhp.alerts.offline.alerts_from_captures` (the
stream's code) over three sets and reports:

* **the lab demo capture** (``amlhp.data.DEMO_CAPTURE``, one gateway): for each scenario
  of its labels file (class -> the scenario's address), the incidents of the class's kind
  that name the address (as host or peer); and the incidents whose host is a benign
  address (``127.10.0.0/16``), or that match no scenario;
* **benign public captures** (one gateway per file): incidents per device-hour, a device
  being a private address that sent packets, its hours the minutes in which it sent any
  (:func:`device_hours`);
* **public attack captures** (one gateway per file): whether an incident was raised and
  the event time from the first attack packet (the file's first packet; for the Modbus
  testbed the first packet its CSV labels malicious) to the first incident.
"""

from __future__ import annotations

import csv
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from amlhp.alerts.kinds import kind_of
from amlhp.alerts.offline import OfflineAlerts, alerts_from_verdicts, scored_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.model.scorer import Scorer

BENIGN_NET = ipaddress.ip_network("127.10.0.0/16")
BENIGN_SOURCES = ("iot_sentinel", "smarthome_madea", "smartplug_ssi", "ics_iti", "doh_benign")
LABELS_FILE = "lab-demo.labels.yaml"
ATTACK_FILES = (
    "scans_evilfingers",
    "stopddos",
    "mqttset_reduced/bruteforce.pcapng",
    "mqttset_reduced/malformed.pcap",
    "mqttset_reduced/slowite.pcap",
    "mqttset_reduced/malariados.pcap",
    "modbus_lemay",
)


def scenarios(labels_file: Path) -> dict[str, str]:
    """Attack class -> its scenario's address, from a lab labels file."""
    data = yaml.safe_load(labels_file.read_text())
    out = {}
    for cls, rules in data["classes"].items():
        if cls != "benign":
            out[cls] = str(rules[0]["where"][0]["ip"]).split("/")[0]
    return out


def _names(incident: dict[str, Any], address: str) -> bool:
    return incident["host"] == address or address in incident["top_peers"]


def lab_figures(run: OfflineAlerts, labels_file: Path) -> dict[str, Any]:
    """Per scenario: matching incidents; plus benign-host and unmatched incidents."""
    incidents = run.incidents
    matched: set[str] = set()
    rows = []
    for cls, address in sorted(scenarios(labels_file).items()):
        hits = [i for i in incidents if i["kind"] == kind_of(cls) and _names(i, address)]
        matched.update(i["incident_id"] for i in hits)
        rows.append(
            {"class": cls, "address": address, "kind": kind_of(cls), "incidents": len(hits)}
        )
    benign = [i for i in incidents if ipaddress.ip_address(i["host"]) in BENIGN_NET]
    unmatched = [i for i in incidents if i["incident_id"] not in matched]
    return {
        "scenarios": rows,
        "scenarios_with_incident": sum(1 for r in rows if r["incidents"]),
        "scenarios_with_one_incident": sum(1 for r in rows if r["incidents"] == 1),
        "incidents": len(incidents),
        "benign_host_incidents": [_brief(i) for i in benign],
        "unmatched_incidents": [_brief(i) for i in unmatched],
    }


def _brief(incident: dict[str, Any]) -> dict[str, Any]:
    keys = ("gateway", "host", "role", "kind", "packets", "classes", "top_peers")
    return {k: incident[k] for k in keys}


def device_hours(files: list[Path]) -> float:
    """Hours during which each device was active, summed over devices and files.

    A device is a private address that sent packets; it is active in each minute in which
    it sent one. Counting active minutes rather than capture spans keeps a long, mostly
    idle capture (or a stray timestamp) from inflating the denominator.
    """

    from amlhp.encoders.capture import iter_encoded

    minutes = 0
    for path in files:
        active: set[tuple[str, int]] = set()
        for batch in iter_encoded([path], gateway=path.name):
            src = batch.column("src_ip").to_pylist()
            minute = (batch.column("ts_ns").to_numpy() // 60_000_000_000).tolist()
            active.update((s, m) for s, m in zip(src, minute, strict=True) if s is not None)
        private = {s for s, _ in active if ipaddress.ip_address(s).is_private}
        minutes += sum(1 for s, _ in active if s in private)
    return minutes / 60.0


def _first_malicious_ns(pcap: Path) -> int | None:
    """The Modbus testbed's first packet labelled 1 in its CSV (1-based packet index)."""
    labelled = pcap.with_name(pcap.stem + "_labeled.csv")
    if not labelled.exists():
        return None
    with labelled.open() as fh:
        first = next(
            (int(r[0]) for r in csv.reader(fh, delimiter=";") if r[1].strip() == "1"), None
        )
    if first is None:
        return None
    from amlhp.encoders.readers import iter_raw_batches

    seen = 0
    for batch in iter_raw_batches(pcap, gateway="x"):
        if seen + batch.num_rows >= first:
            return int(batch.column("ts_ns")[first - seen - 1].as_py())
        seen += batch.num_rows
    return None


@dataclass
class Corpus:
    """Every capture of the evaluation scored once (the verdicts do not depend on the
    alert policy): per source, per file (one gateway each), its verdict batches."""

    version: str
    lab: list[pa.RecordBatch]
    labels: Path
    #: benign source -> file -> verdict batches; and the source's device-hours
    benign: dict[str, dict[str, list[pa.RecordBatch]]] = field(default_factory=dict)
    hours: dict[str, float] = field(default_factory=dict)
    #: attack file (relative to the public folder) -> verdict batches; first attack ns
    attacks: dict[str, list[pa.RecordBatch]] = field(default_factory=dict)
    attack_start: dict[str, int | None] = field(default_factory=dict)

    def sources(self) -> list[str]:
        """Every source's name: the lab, the benign sources, the attack folders."""
        return ["lab", *self.benign, *dict.fromkeys(attack_source(f) for f in self.attacks)]


def attack_source(file: str) -> str:
    return file.split("/", 1)[0]


def load_corpus(scorer: Scorer, demo: Path, public: Path | None) -> Corpus:
    """Score the lab demo capture and, where the folder exists, the public captures."""
    from amlhp.encoders.capture import expand_paths

    def scored(path: Path, gateway: str) -> list[pa.RecordBatch]:
        return [b for _, batches in scored_captures([path], scorer, gateway=gateway)
                for b in batches]  # fmt: skip

    corpus = Corpus(scorer.version, scored(demo, "lab-demo"), demo.with_name(LABELS_FILE))
    if public is None or not public.is_dir():
        return corpus
    for source in BENIGN_SOURCES:
        files = expand_paths([public / source])
        corpus.benign[source] = {str(f.relative_to(public)): scored(f, f.name) for f in files}
        corpus.hours[source] = device_hours(files)
    for entry in ATTACK_FILES:
        for path in expand_paths([public / entry]):
            name = str(path.relative_to(public))
            corpus.attacks[name] = scored(path, path.name)
            corpus.attack_start[name] = _first_malicious_ns(path)
    return corpus


def _run(gateway: str, batches: list[pa.RecordBatch], policy: AlertPolicy, version: str) -> Any:
    return alerts_from_verdicts([(gateway, batches)], policy, version)


def benign_figures(corpus: Corpus, policy: AlertPolicy) -> list[dict[str, Any]]:
    """Per benign source: incidents, device-hours, incidents per device-hour."""
    rows = []
    for source, files in corpus.benign.items():
        incidents: list[dict[str, Any]] = []
        packets = 0
        for name, batches in files.items():
            run = _run(Path(name).name, batches, policy, corpus.version)
            incidents += run.incidents
            packets += run.packets
        hours = corpus.hours[source]
        rows.append(
            {
                "source": source,
                "files": len(files),
                "packets": packets,
                "device_hours": round(hours, 2),
                "incidents": len(incidents),
                "per_device_hour": round(len(incidents) / hours, 3) if hours else None,
                "examples": [_brief(i) for i in incidents[:3]],
            }
        )
    return rows


def attack_figures(corpus: Corpus, policy: AlertPolicy) -> list[dict[str, Any]]:
    """Per public attack file: incidents raised, and first attack packet -> first alert."""
    rows = []
    for name, batches in corpus.attacks.items():
        run = _run(Path(name).name, batches, policy, corpus.version)
        start = corpus.attack_start.get(name)
        if start is None:
            start = run.spans.get(Path(name).name, (0, 0))[0]
        after = [i for i in run.incidents if i["opened_ns"] >= start]
        first = min((i["opened_ns"] for i in after), default=None)
        rows.append(
            {
                "file": name,
                "source": attack_source(name),
                "packets": run.packets,
                "incidents": len(run.incidents),
                "kinds": sorted({i["kind"] for i in run.incidents}),
                "hosts": sorted({i["host"] for i in run.incidents})[:5],
                "detectors": sorted({e["detector"] for i in after for e in i["evidence"]}),
                "detected": first is not None,
                "time_to_alert_s": round((first - start) / 1e9, 3) if first else None,
            }
        )
    return rows


@dataclass(frozen=True)
class Evaluation:
    lab: dict[str, Any]
    benign: list[dict[str, Any]]
    attacks: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"lab": self.lab, "benign": self.benign, "attacks": self.attacks}


def figures(corpus: Corpus, policy: AlertPolicy) -> Evaluation:
    """All three figures of one policy over the scored corpus."""
    lab_run = _run("lab-demo", corpus.lab, policy, corpus.version)
    return Evaluation(
        lab_figures(lab_run, corpus.labels),
        benign_figures(corpus, policy),
        attack_figures(corpus, policy),
    )


def evaluate(scorer: Scorer, policy: AlertPolicy, demo: Path, public: Path | None) -> Evaluation:
    """All three figures (the public ones only where the folder exists)."""
    return figures(load_corpus(scorer, demo, public), policy)
