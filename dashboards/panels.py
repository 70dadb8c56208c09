"""Panel kinds the dashboards use, built with grafana-foundation-sdk's typed builders.

Each dashboard module has one small typed function per panel that picks a kind from here
and gives it a title, a description and its queries (:class:`Query`); this module decides
how a kind looks (units, legends, stacking), so all three dashboards look alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableHide,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from amlhp.dashboards import queries as q

#: The data source `amlhp dashboards push` creates and the provisioning file declares.
DATASOURCE_UID = "amlhp-prometheus"
DATASOURCE_NAME = "amlhp Prometheus"
#: Panels query whichever Prometheus data source the ``datasource`` variable selects.
DATASOURCE = DataSourceRef(type_val="prometheus", uid=f"${{{q.VAR_DATASOURCE}}}")
FULL, HALF, THIRD, QUARTER = 24, 12, 8, 6
HEIGHT = 8
STAT_HEIGHT = 4


@dataclass(frozen=True)
class Query:
    """One PromQL target of a panel.

    ``instant``: evaluated once at the end of the range (stat, bar gauge, table panels);
    ``heatmap``: the result is a set of histogram buckets (``le`` labels).
    """

    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


def _targets(queries: list[Query]) -> list[prometheus.Dataquery]:
    out = []
    for i, query in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .expr(query.expr)
            .ref_id(chr(ord("A") + i))
            .datasource(DATASOURCE)
            .legend_format(query.legend or "__auto")
        )
        target = target.instant() if query.instant else target.range()
        if query.heatmap:
            target = target.format(PromQueryFormat.HEATMAP)
        out.append(target)
    return out


PanelT = TypeVar("PanelT", timeseries.Panel, stat.Panel, bargauge.Panel, heatmap.Panel, table.Panel)


def _base(
    panel: PanelT,
    title: str,
    description: str,
    queries: list[Query],
    width: int,
    height: int = HEIGHT,
) -> PanelT:
    """What every panel kind has: title, description, data source, queries and size."""
    return (
        panel.title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries))  # type: ignore[arg-type]
        .span(width)
        .height(height)
    )


def _last_value() -> common_builders.ReduceDataOptions:
    """Reduce a series to its last value (stat and bar gauge panels)."""
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def timeseries_panel(
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str = "short",
    width: int = HALF,
    stacked: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
) -> timeseries.Panel:
    """Lines over time; ``stacked`` stacks the series (a mix adds up to the total)."""
    panel = (
        _base(timeseries.Panel(), title, description, queries, width)
        .unit(unit)
        .line_width(1)
        .fill_opacity(30 if stacked else 10)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI))
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def seconds_panel(
    title: str, description: str, histogram: str, *matchers: str, typical: str = "p50"
) -> timeseries.Panel:
    """A histogram of seconds over time: its typical value (``p50`` or ``mean``) and p99.

    The typical line says how long things take; p99 shows the tail that a mean hides.
    """
    middle = (
        q.mean(histogram, *matchers) if typical == "mean" else q.quantile(0.5, histogram, *matchers)
    )
    return timeseries_panel(
        title,
        description,
        [Query(middle, typical), Query(q.quantile(0.99, histogram, *matchers), "p99")],
        unit="s",
    )


def stat_panel(
    title: str, description: str, queries: list[Query], *, unit: str = "short", width: int = QUARTER
) -> stat.Panel:
    """One big number per series: the last value of an instant query."""
    return (
        _base(stat.Panel(), title, description, queries, width, STAT_HEIGHT)
        .unit(unit)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .reduce_options(_last_value())
    )


def bars_panel(
    title: str,
    description: str,
    queries: list[Query],
    *,
    unit: str = "short",
    width: int = HALF,
) -> bargauge.Panel:
    """Horizontal bars, one per series (or per bucket of a heatmap-format query)."""
    return (
        _base(bargauge.Panel(), title, description, queries, width)
        .unit(unit)
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .reduce_options(_last_value())
        .min(0)
    )


def heatmap_panel(
    title: str, description: str, queries: list[Query], *, unit: str = "short", width: int = HALF
) -> heatmap.Panel:
    """Bucket counts over time from a histogram (queries in heatmap format)."""
    return (
        _base(heatmap.Panel(), title, description, queries, width)
        .calculate(False)
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .color(
            heatmap.HeatmapColorOptions()
            .mode(heatmap_models.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
        )
        .show_legend()
    )


def table_panel(
    title: str, description: str, queries: list[Query], *, width: int = HALF
) -> table.Panel:
    """Instant-query results as rows (label columns and the value)."""
    return _base(table.Panel(), title, description, queries, width)


def row(title: str) -> db.Row:
    return db.Row(title)


def annotation(name: str, expr: str, color: str) -> db.AnnotationQuery:
    """Marks on every time-series panel where ``expr`` (a Prometheus query) is non-zero."""
    return (
        db.AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .expr(expr)
        .enable(True)
        .icon_color(color)
    )


# -- template variables ---------------------------------------------------------------
def datasource_variable() -> db.DatasourceVariable:
    """Any Prometheus data source; the provisioned / pushed one is selected by default."""
    return (
        db.DatasourceVariable(q.VAR_DATASOURCE)
        .label("Prometheus")
        .type("prometheus")
        .current(VariableOption(selected=True, text=DATASOURCE_NAME, value=DATASOURCE_UID))
    )


def label_variable(name: str, label: str, metric: str) -> db.QueryVariable:
    """A multi-value variable over a label's values, "All" meaning the regex ``.*``."""
    return (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": q.label_values(metric, name), "refId": f"{name}-values"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
        .hide(VariableHide.DONT_HIDE)
    )


def gateway_variable() -> db.QueryVariable:
    return label_variable(q.VAR_GATEWAY, "Gateway", q.PACKETS_IN)


def class_variable() -> db.QueryVariable:
    return label_variable(q.VAR_CLASS, "Class", q.VERDICTS)
