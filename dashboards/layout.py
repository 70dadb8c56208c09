"""A dashboard from an ordered list of rows and panels, with the shared settings.

Every amlhp dashboard has the same template variables (Prometheus data source, gateway,
class), tags, refresh and time range, and panels numbered in order so that links to a
panel (``viewPanel=N``) stay stable when the JSON is regenerated.
"""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models import dashboard as models

from amlhp.dashboards.panels import class_variable, datasource_variable, gateway_variable

PanelBuilder = Builder[models.Panel]
TAGS = ["amlhp", "iot", "kafka"]


def new_dashboard(
    uid: str,
    title: str,
    description: str,
    items: list[PanelBuilder | db.Row],
    annotations: Sequence[db.AnnotationQuery] = (),
) -> models.Dashboard:
    """Lay ``items`` out left to right, top to bottom (a row starts a new line) and number
    them in that order; ``annotations`` mark events on the time-series panels."""
    dashboard = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("10s")
        .time("now-30m", "now")
        .timezone("browser")
        .editable()
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .with_variable(datasource_variable())
        .with_variable(gateway_variable())
        .with_variable(class_variable())
    )
    for query in annotations:
        dashboard = dashboard.annotation(query)
    for item in items:
        if isinstance(item, db.Row):
            dashboard = dashboard.with_row(item)
        else:
            dashboard = dashboard.with_panel(item)
    built = dashboard.build()
    for number, panel in enumerate(built.panels or [], start=1):
        panel.id_val = number
    return built
