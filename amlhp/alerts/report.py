"""The alert figures as Markdown and JSON: ``model/results/alerts/alerts.{md,json}``.

Every figure is measured on a source that did not choose the thresholds
(:mod:`amlhp.alerts.fitting`): the tables say which fold's thresholds each row used.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from amlhp.alerts.evaluate import Evaluation
from amlhp.alerts.fitting import Fit
from amlhp.alerts.policy import AlertPolicy
from amlhp.markdown import markdown_table


def _fold(fit: Fit, source: str) -> str:
    c = fit.chosen[source]
    return f"x{c.behaviour:g} / {c.model_share:g} / x{c.model_packets:g}"


def markdown(fit: Fit, base: AlertPolicy) -> str:
    """The held-out figures, fold by fold."""
    result = fit.held_out_figures()
    lab = result.lab
    overall = fit.overall
    detected = sum(r["detected"] for r in result.attacks)
    lines = [
        "# Incidents on the project's data, thresholds fitted leaving one source out",
        "",
        "Made by `amlhp alerts-evaluate`. For each source (the lab demo capture, each "
        "benign public source, each public attack folder) the thresholds were chosen on "
        "the *other* sources only: the candidate clean there (at most "
        f"{fit.max_fp_rate} false incidents per device-hour on every other benign source, "
        "none on a benign lab host) that detects the most, the least sensitive on ties. "
        "Every figure below is that source's under its own fold's thresholds. Fold column: "
        "behaviour thresholds x factor / the model's minimum share of a host's packets / "
        "the model's packet counts x factor.",
        "",
        f"**Attack files detected: {detected} of {len(result.attacks)}.** Lab scenarios "
        f"with an incident of their kind: {lab['scenarios_with_incident']} of "
        f"{len(lab['scenarios'])}; incidents on benign lab hosts: "
        f"{len(lab['benign_host_incidents'])}. Shipped defaults (chosen on all sources): "
        f"behaviour x{overall.behaviour:g}, model share {overall.model_share:g}, model "
        f"packets x{overall.model_packets:g}.",
        "",
        f"## Lab demo capture (one gateway; fold {_fold(fit, 'lab')})",
        "",
        f"Incidents {lab['incidents']}; on benign hosts {len(lab['benign_host_incidents'])}; "
        f"matching no scenario {len(lab['unmatched_incidents'])}.",
        "",
    ]
    lab_columns = ("class", "address", "kind", "incidents")
    lines += markdown_table(lab_columns, ([r[k] for k in lab_columns] for r in lab["scenarios"]))
    for item in lab["unmatched_incidents"]:
        lines.append(f"\nNo scenario: {item['host']} {item['kind']} ({item['packets']} packets, "
                     f"{', '.join(item['classes'][:3])}).")  # fmt: skip
    lines += ["", "## Benign public captures (one gateway per file)", ""]
    lines += markdown_table(
        ("source", "fold", "files", "packets", "device-hours", "incidents", "per device-hour"),
        (
            [r["source"], _fold(fit, r["source"]), r["files"], r["packets"],
             r["device_hours"], r["incidents"], r["per_device_hour"]]
            for r in result.benign
        ),
    )  # fmt: skip
    lines += ["", "## Public attack captures (one gateway per file)", ""]
    lines += markdown_table(
        ("file", "fold", "packets", "kinds", "detectors", "first attack packet -> alert (s)"),
        (
            [r["file"], _fold(fit, r["source"]), r["packets"], ", ".join(r["kinds"]),
             ", ".join(r["detectors"]), r["time_to_alert_s"] if r["detected"] else "missed"]
            for r in result.attacks
        ),
    )  # fmt: skip
    lines += ["", "## Base policy the factors apply to", "",
              ", ".join(f"{k}={v}" for k, v in _policy(base).items())]  # fmt: skip
    return "\n".join(lines) + "\n"


def _policy(policy: AlertPolicy) -> dict[str, Any]:
    return {k: sorted(v) if isinstance(v, frozenset) else v
            for k, v in dataclasses.asdict(policy).items()}  # fmt: skip


def write_results(fit: Fit, base: AlertPolicy, out: Path) -> list[Path]:
    """``alerts.json`` (held-out figures, folds, the candidates' scores) and ``alerts.md``."""
    out.mkdir(parents=True, exist_ok=True)
    held_out: Evaluation = fit.held_out_figures()
    data = {
        "base_policy": _policy(base),
        "folds": {s: dataclasses.asdict(c) for s, c in fit.chosen.items()},
        "overall": dataclasses.asdict(fit.overall),
        "max_fp_rate": fit.max_fp_rate,
        "held_out": held_out.as_dict(),
    }
    paths = [out / "alerts.json", out / "alerts.md"]
    paths[0].write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    paths[1].write_text(markdown(fit, base))
    return paths
