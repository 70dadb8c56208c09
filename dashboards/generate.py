"""Dashboards as code -> the committed JSON in ``dashboards/generated/``.

:func:`render` serialises a dashboard deterministically (sorted keys, two-space indent,
trailing newline), so regenerating without a code change rewrites identical bytes and a
test can insist on it. :func:`panel_queries` reads the PromQL of every panel back from
the JSON: what Grafana will run is what the Prometheus test evaluates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from amlhp.dashboards.data_quality import data_quality
from amlhp.dashboards.exceptions import DashboardsError
from amlhp.dashboards.model_view import model
from amlhp.dashboards.overview import overview

#: package data (``amlhp.dashboards`` ships ``generated/*.json``); in a checkout, the source
GENERATED_DIR = Path(str(resources.files("amlhp.dashboards").joinpath("generated")))

#: file stem -> builder; the stem is also the dashboard's place in the provisioning folder.
DASHBOARDS: dict[str, Callable[[], Dashboard]] = {
    "overview": overview,
    "model": model,
    "data-quality": data_quality,
}


def render(dashboard: Dashboard) -> str:
    """The dashboard's JSON text: sorted keys, stable across runs and machines."""
    text = JSONEncoder(sort_keys=True, indent=2).encode(dashboard)
    # Round-trip through json so the layout does not depend on the SDK's encoder details.
    return json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{stem}.json": render(build()) for stem, build in DASHBOARDS.items()}


def write_generated(out_dir: Path = GENERATED_DIR) -> list[Path]:
    """(Re)write the JSON files; files of dashboards that no longer exist are removed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for stale in out_dir.glob("*.json"):
        if stale.name not in rendered:
            stale.unlink()
    return written


def stale_files(out_dir: Path = GENERATED_DIR) -> list[str]:
    """Names of the files that differ from what the code generates (empty: up to date)."""
    rendered = render_all()
    stale = [
        name
        for name, text in rendered.items()
        if not (out_dir / name).exists() or (out_dir / name).read_text() != text
    ]
    extra = [p.name for p in out_dir.glob("*.json") if p.name not in rendered]
    return sorted(stale + extra)


def load_generated(out_dir: Path = GENERATED_DIR) -> dict[str, dict[str, Any]]:
    """The committed dashboards as JSON objects, by file name."""
    out = {}
    for path in sorted(out_dir.glob("*.json")):
        try:
            out[path.name] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DashboardsError(f"{path} is not valid JSON: {exc}") from exc
    if not out:
        raise DashboardsError(f"no dashboards in {out_dir}: run `amlhp dashboards generate`")
    return out


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, as Grafana would send it to Prometheus."""

    dashboard: str
    panel_id: int
    panel: str
    ref_id: str
    expr: str
    instant: bool
    legend: str


def panel_queries(dashboard: dict[str, Any]) -> list[PanelQuery]:
    """Every Prometheus target of every panel (rows' nested panels included)."""
    out = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if "expr" not in target:
                continue
            out.append(
                PanelQuery(
                    dashboard=str(dashboard.get("uid")),
                    panel_id=int(panel.get("id", 0)),
                    panel=str(panel.get("title")),
                    ref_id=str(target.get("refId")),
                    expr=str(target["expr"]),
                    instant=bool(target.get("instant")) and not target.get("range"),
                    legend=str(target.get("legendFormat", "")),
                )
            )
    return out


def expand(expr: str, values: dict[str, str]) -> str:
    """Substitute Grafana variables (``$name`` / ``${name}``) the way Grafana would."""
    # Longest names first so that $__rate_interval is not read as $__rate + "_interval".
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    return expr
