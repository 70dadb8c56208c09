"""PromQL building blocks shared by every panel: selectors, rates, sums, quantiles.

Panels never spell PromQL by hand; they combine these helpers, so that a label or a
template variable is named in one place and every query filters the same way. The
metric names are those of :mod:`amlhp.metrics.definitions`.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Grafana's rate window: at least four scrape intervals (the data source's
#: ``timeInterval``, 5s in the provisioned one), so a rate never sees a single sample.
RATE_WINDOW = "$__rate_interval"
#: The dashboard's whole time range, for "how many in this range" panels.
RANGE_WINDOW = "$__range"

VAR_DATASOURCE = "datasource"
VAR_GATEWAY = "gateway"
VAR_CLASS = "class"

GATEWAY = f'gateway=~"${VAR_GATEWAY}"'
CLASS = f'class=~"${VAR_CLASS}"'

# Metric names (see amlhp.metrics.definitions).
PACKETS_IN = "amlhp_packets_in_total"
PACKETS_OUT = "amlhp_packets_out_total"
BYTES_IN = "amlhp_bytes_in_total"
BYTES_OUT = "amlhp_bytes_out_total"
BATCH = "amlhp_batch_packets"
INFERENCE_BATCH = "amlhp_inference_batch_seconds"
INFERENCE_PACKET = "amlhp_inference_packet_seconds"
LATENCY = "amlhp_e2e_latency_seconds"
VERDICTS = "amlhp_verdicts_total"
SCORE = "amlhp_verdict_score"
DEAD_LETTERS = "amlhp_dead_letters_total"
SKIPPED = "amlhp_skipped_messages_total"
DELIVERY_FAILURES = "amlhp_producer_delivery_failures_total"
MODEL_INFO = "amlhp_model_info"
MODEL_LOADS = "amlhp_model_loads_total"
SITE_PROFILES = "amlhp_site_profile_info"
ALERTS = "amlhp_alerts_total"
OPEN_INCIDENTS = "amlhp_open_incidents"
FLOW_VERDICTS = "amlhp_flow_verdicts_total"
FLOW_ALARMS = "amlhp_flow_alarms_total"
DEVICES = "amlhp_devices"
OPEN_FLOWS = "amlhp_open_flows"
LAST_SEEN = "amlhp_gateway_last_seen_timestamp_seconds"
SUPPRESSED = "amlhp_suppressed_total"
LAG_RECORDS = "amlhp_consumer_lag_records"
LAG_SECONDS = "amlhp_consumer_lag_seconds"
# Faust's own sensor in the worker (faust.sensors.prometheus, prefix amlhp_faust).
FAUST_EVENTS = "amlhp_faust_total_events_total"
FAUST_SENT = "amlhp_faust_total_sent_messages_total"
FAUST_SEND_ERRORS = "amlhp_faust_total_error_messages_sent_total"


def sel(metric: str, *matchers: str) -> str:
    """``metric{m1,m2}``; matchers are written ``label="value"`` or with the constants."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def rate(selector: str, window: str = RATE_WINDOW) -> str:
    return f"rate({selector}[{window}])"


def increase(selector: str, window: str = RATE_WINDOW) -> str:
    return f"increase({selector}[{window}])"


def sum_by(labels: Iterable[str], expr: str) -> str:
    """``sum by (a, b) (expr)``; no labels gives a plain ``sum(expr)``."""
    names = ", ".join(labels)
    return f"sum by ({names}) ({expr})" if names else f"sum({expr})"


def max_by(labels: Iterable[str], expr: str) -> str:
    """Several processes may report the same series (two workers of one group measure the
    same lag): ``max`` keeps one value per label set instead of adding them up."""
    return f"max by ({', '.join(labels)}) ({expr})"


def or_zero(expr: str, like: str) -> str:
    """``expr``, or 0 for every series of ``like`` that ``expr`` lacks (no "No data")."""
    return f"({expr}) or ({like}) * 0"


def ratio(numerator: str, denominator: str) -> str:
    return f"({numerator}) / ({denominator})"


def quantile(q: float, histogram: str, *matchers: str, by: Iterable[str] = ()) -> str:
    """``histogram_quantile`` of a histogram's ``_bucket`` series over the rate window."""
    labels = ["le", *by]
    return f"histogram_quantile({q}, {sum_by(labels, rate(sel(histogram + '_bucket', *matchers)))})"


def mean(histogram: str, *matchers: str, by: Iterable[str] = ()) -> str:
    """Mean of a histogram's observations over the rate window: rate(sum) / rate(count)."""
    labels = list(by)
    return ratio(
        sum_by(labels, rate(sel(histogram + "_sum", *matchers))),
        sum_by(labels, rate(sel(histogram + "_count", *matchers))),
    )


def buckets(histogram: str, *matchers: str, window: str = RANGE_WINDOW) -> str:
    """Observations per bucket over ``window`` (a heatmap / bar-gauge distribution)."""
    return sum_by(["le"], increase(sel(histogram + "_bucket", *matchers), window))


def label_values(metric: str, label: str) -> str:
    """A template variable's query: the values ``label`` takes on ``metric``."""
    return f"label_values({metric}, {label})"
