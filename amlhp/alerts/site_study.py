"""``amlhp alerts-adapt-study``: does learning a site lose incidents on known attacks?

For each benign source, its leave-one-source-out fold model (``amlhp model cross-source
--models-dir``: it never saw that source) learns the source's whole traffic as ``amlhp
model adapt --force`` would (forced: the fold model calls some of a network it never saw
malicious, which is the point), and the profile is then applied to every file of the
public attack captures, each file its own gateway as ``amlhp alerts --per-file`` runs them.
The incidents (kind and host) raised without and with the profile are compared: an
incident found without it and missing with it is lost.

The profile is the largest a site can give (the whole source, not a window of it), so
this is the hard case; the guard's reference is the committed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from amlhp.alerts.offline import alerts_from_captures
from amlhp.alerts.policy import AlertPolicy
from amlhp.alerts.site_adapt import from_captures
from amlhp.encoders.capture import expand_paths
from amlhp.markdown import markdown_table
from amlhp.model.adapt import decide
from amlhp.model.artifact import read_metadata
from amlhp.model.attack_reference import AttackReference
from amlhp.model.scorer import load_scorer
from amlhp.model.site import SiteProfiles

#: the public attack captures, relative to the shared data folder (one gateway per file)
ATTACK_SETS: dict[str, tuple[str, ...]] = {
    "stopddos": ("stopddos/*.pcap", "stopddos/*.pcapng"),
    "scans_evilfingers": ("scans_evilfingers/*.pcap",),
    "mqttset_attacks": (
        "mqttset_reduced/bruteforce.pcapng", "mqttset_reduced/malformed.pcap",
        "mqttset_reduced/slowite.pcap", "mqttset_reduced/malariados.pcap",
        "mqttset_reduced/flood.pcap",
    ),
}  # fmt: skip
#: the benign traffic of each source, as capture files (the lab: its benign devices' run)
SITES: dict[str, tuple[str, ...]] = {
    "doh_benign": ("doh_benign/*.pcap",),
    "ics_iti": ("ics_iti/*.pcap",),
    "iot_sentinel": ("iot_sentinel/**/*.pcap",),
    "mqttset_reduced": ("mqttset_reduced/benign-5mb/*.pcap",),
    "smarthome_madea": ("smarthome_madea/*.cap",),
    "smartplug_ssi": ("smartplug_ssi/*.pcap",),
}


def _files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted({p for pattern in patterns for p in root.glob(pattern)})


def _incidents(rows: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(r["gateway"]), str(r["kind"]), str(r["host"])) for r in rows}


def run_site_incident_study(
    public: Path, models_dir: Path, out: Path, policy: AlertPolicy,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The study of the module docstring; writes ``out`` (JSON) and returns it."""
    say = on_event or (lambda _m: None)
    reference = AttackReference.load()
    attack_files = {name: _files(public, pats) for name, pats in ATTACK_SETS.items()}
    doc: dict[str, Any] = {"models_dir": str(models_dir), "rows": []}
    for site, patterns in SITES.items():
        path = models_dir / f"{site}.json"
        if not path.exists():
            continue
        held = str(read_metadata(path).get("held_out_source", site))
        scorer = load_scorer(path)
        stats, _ = from_captures(_files(public, patterns), scorer, policy, "site")
        adapted = decide(
            stats, base_version=scorer.version, gateways=("site",), assess=scorer.assess,
            reference=reference, adapted_on={"kind": "captures", "source": held}, force=True,
        )  # fmt: skip
        say(f"{held}: {len(adapted.profile.memory)} kinds learnt from {stats.packets} packets")
        with_site = load_scorer(path)
        for name, files in attack_files.items():
            gateways = tuple(p.name for p in expand_paths(files))
            profile = replace(adapted.profile, gateways=gateways)
            with_site.sites = SiteProfiles(dict.fromkeys(gateways, profile))
            before = alerts_from_captures(files, scorer, policy, per_file=True).incidents
            after = alerts_from_captures(files, with_site, policy, per_file=True).incidents
            lost = sorted(_incidents(before) - _incidents(after))
            doc["rows"].append(
                {
                    "site": held,
                    "attacks": name,
                    "files": len(files),
                    "incidents_base": len(before),
                    "incidents_adapted": len(after),
                    "lost": [list(x) for x in lost],
                    "new": len(_incidents(after) - _incidents(before)),
                }
            )
            say(f"{held} on {name}: {len(before)} -> {len(after)} incidents, {len(lost)} lost")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def incident_markdown(doc: dict[str, Any]) -> str:
    """The study as a Markdown table."""
    header = ["site learnt (whole source)", "attack captures", "files", "incidents without",
              "with the site", "lost"]  # fmt: skip
    body = (
        [r["site"], r["attacks"], r["files"], r["incidents_base"], r["incidents_adapted"],
         len(r["lost"])]
        for r in doc["rows"]
    )  # fmt: skip
    return "\n".join(markdown_table(header, body, right=range(2, 6))) + "\n"
