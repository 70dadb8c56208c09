"""The Overview dashboard: is the pipeline keeping up, how fast, and what does it see?

Totals since the processes started, throughput per step, consumer lag in records and in
seconds, the incidents the alerts stage has open, end-to-end latency, the verdict mix
over time and the malicious share per gateway. One function per panel; :func:`overview`
lays them out.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from amlhp.dashboards import queries as q
from amlhp.dashboards.layout import PanelBuilder, new_dashboard
from amlhp.dashboards.panels import (
    FULL,
    HALF,
    QUARTER,
    Query,
    annotation,
    bars_panel,
    row,
    seconds_panel,
    stat_panel,
    table_panel,
    timeseries_panel,
)
from amlhp.metrics.definitions import STEP_ENCODE, STEP_SCORE, STEP_SINK, STEP_TAP

UID = "amlhp-overview"


# -- totals ---------------------------------------------------------------------------
def packets_captured_total() -> PanelBuilder:
    return stat_panel(
        "Packets captured",
        "Packets the taps captured since they started (amlhp_packets_in_total, step=tap).",
        [Query(q.sum_by([], q.sel(q.PACKETS_IN, q.eq("step", STEP_TAP), q.GATEWAY)), instant=True)],
        width=QUARTER,
    )


def verdicts_total() -> PanelBuilder:
    return stat_panel(
        "Verdicts",
        "Verdicts published by the score step since the workers started.",
        [Query(q.sum_by([], q.sel(q.VERDICTS, q.GATEWAY, q.CLASS)), instant=True)],
        width=QUARTER,
    )


def dead_letters_total() -> PanelBuilder:
    return stat_panel(
        "Dead-letter packets",
        "Packets that became dead letters (encoder refused them) since the workers started; "
        "verdicts + dead-letter packets = packets captured once the pipeline has caught up.",
        [Query(q.sum_by([], q.sel(q.DEAD_LETTERS, q.eq("kind", "packet"))), instant=True)],
        width=QUARTER,
    )


def stored_total() -> PanelBuilder:
    return stat_panel(
        "Verdicts stored",
        "Verdicts the Parquet sink has durably written since it started.",
        [
            Query(
                q.sum_by([], q.sel(q.PACKETS_OUT, q.eq("step", STEP_SINK), q.GATEWAY)), instant=True
            )
        ],
        width=QUARTER,
    )


# -- throughput -----------------------------------------------------------------------
def throughput_per_step() -> PanelBuilder:
    return timeseries_panel(
        "Throughput per step",
        "Packets per second each step passes on: tap delivered to Kafka, encode encoded, "
        "score verdicts published, sink verdicts written.",
        [
            Query(
                q.sum_by(["step"], q.rate(q.sel(q.PACKETS_OUT, q.GATEWAY))),
                "{{step}}",
            )
        ],
        unit="pps",
    )


def bytes_per_step() -> PanelBuilder:
    return timeseries_panel(
        "Bytes per step",
        "Bytes per second into and out of each step (Kafka message values; tap in: captured "
        "frames; sink out: Parquet).",
        [
            Query(q.sum_by(["step"], q.rate(q.sel(q.BYTES_IN, q.GATEWAY))), "{{step}} in"),
            Query(q.sum_by(["step"], q.rate(q.sel(q.BYTES_OUT, q.GATEWAY))), "{{step}} out"),
        ],
        unit="Bps",
    )


def _per_partition(metric: str) -> Query:
    """One series per consumer group and topic-partition (the lag gauges' labels)."""
    return Query(
        q.max_by(["group", "topic", "partition"], metric), "{{group}} {{topic}}/{{partition}}"
    )


def consumer_lag_records() -> PanelBuilder:
    return timeseries_panel(
        "Consumer lag (records)",
        "Messages each consumer group has not yet processed, per topic-partition: log end "
        "minus committed offset, read through the Kafka admin API.",
        [_per_partition(q.LAG_RECORDS)],
    )


def consumer_lag_seconds() -> PanelBuilder:
    return timeseries_panel(
        "Consumer lag (seconds)",
        "Age of the oldest message each group has not processed, per topic-partition "
        "(0 when caught up).",
        [_per_partition(q.LAG_SECONDS)],
        unit="s",
    )


def latency_quantiles() -> PanelBuilder:
    return seconds_panel(
        "End-to-end latency (capture -> verdict)",
        "p50 and p99 of the time from a packet's capture timestamp to its verdict.",
        q.LATENCY,
        q.eq("step", STEP_SCORE),
        q.GATEWAY,
    )


# -- verdicts -------------------------------------------------------------------------
def verdict_mix() -> PanelBuilder:
    return timeseries_panel(
        "Verdict mix over time",
        "Verdicts per second by predicted class, stacked.",
        [Query(q.sum_by(["class"], q.rate(q.sel(q.VERDICTS, q.GATEWAY, q.CLASS))), "{{class}}")],
        unit="pps",
        stacked=True,
    )


def _decision_share(decision: str) -> str:
    everything = q.sum_by(["gateway"], q.rate(q.sel(q.VERDICTS, q.GATEWAY)))
    chosen = q.sum_by(["gateway"], q.rate(q.sel(q.VERDICTS, q.GATEWAY, q.eq("decision", decision))))
    # a gateway without such verdicts shows 0, not "No data"
    return q.ratio(q.or_zero(chosen, everything), everything)


def _decision_share_panel(decision: str, description: str) -> PanelBuilder:
    return timeseries_panel(
        f"{decision.capitalize()} share per gateway",
        description,
        [Query(_decision_share(decision), "{{gateway}}")],
        unit="percentunit",
        max_value=1,
    )


def malicious_share() -> PanelBuilder:
    return _decision_share_panel(
        "malicious",
        "Share of each gateway's verdicts whose decision is malicious: the model's "
        "calibrated malicious score above its threshold, on traffic like its training data.",
    )


def uncertain_share() -> PanelBuilder:
    return _decision_share_panel(
        "uncertain",
        "Share of each gateway's verdicts the model is not sure of (a score between its "
        "benign and malicious thresholds, or traffic unlike its training data): a rising "
        "share means a new device or attack the model has not learnt.",
    )


def verdicts_by_class() -> PanelBuilder:
    return bars_panel(
        "Verdicts per class (since start)",
        "Verdicts per predicted class since the workers started.",
        [
            Query(
                q.sum_by(["class"], q.sel(q.VERDICTS, q.GATEWAY, q.CLASS)),
                "{{class}}",
                instant=True,
            )
        ],
        width=HALF,
    )


def faust_internals() -> PanelBuilder:
    return timeseries_panel(
        "Worker internals (Faust)",
        "Faust's own sensor in the workers: stream events processed, messages sent and "
        "send errors per second.",
        [
            Query(q.sum_by([], q.rate(q.FAUST_EVENTS)), "events in"),
            Query(q.sum_by([], q.rate(q.FAUST_SENT)), "messages sent"),
            Query(q.sum_by([], q.rate(q.FAUST_SEND_ERRORS)), "send errors"),
        ],
        unit="ops",
    )


def delivery_failures() -> PanelBuilder:
    return timeseries_panel(
        "Producer delivery failures",
        "Kafka messages a producer could not deliver, per step (worker: the Faust "
        "producer shared by encode and score). Anything above 0 needs a look.",
        [Query(q.sum_by(["step"], q.increase(q.sel(q.DELIVERY_FAILURES))), "{{step}}")],
        width=HALF,
    )


# -- incidents -----------------------------------------------------------------------
def open_incidents() -> PanelBuilder:
    return table_panel(
        "Open incidents",
        "Incidents open now, by gateway and kind (amlhp_open_incidents from the alerts "
        "stage). The hosts are in the alerts topic, the alert dataset and `amlhp report`; "
        "an incident closes after its quiet period.",
        [
            Query(
                q.sum_by(["gateway", "kind"], q.sel(q.OPEN_INCIDENTS, q.GATEWAY)) + " > 0",
                "{{gateway}} {{kind}}",
                instant=True,
            )
        ],
        width=HALF,
    )


def alerts_raised() -> PanelBuilder:
    return timeseries_panel(
        "Alerts raised over time",
        "Incidents opened per interval by kind (amlhp_alerts_total, status=opened); "
        "updates and closes of the same incidents are not counted here.",
        [
            Query(
                q.sum_by(
                    ["kind"],
                    q.increase(q.sel(q.ALERTS, q.eq("status", "opened"), q.GATEWAY)),
                ),
                "{{kind}}",
            )
        ],
        width=HALF,
        stacked=True,
    )


def suppressed_incidents() -> PanelBuilder:
    return timeseries_panel(
        "Suppressed alert rows by rule",
        "Alert rows an allow-list rule covers (amlhp_suppressed_total by rule): kept in the "
        "alert topic and dataset, marked suppressed_by, not exported. A rule that stays at "
        "0 never matches: review it (docs/alerts.md#suppression).",
        [Query(q.sum_by(["rule"], q.increase(q.SUPPRESSED)), "{{rule}}")],
        width=HALF,
        stacked=True,
    )


def gateway_health() -> PanelBuilder:
    tap = q.eq("step", STEP_TAP)
    received, encoded = (
        q.sum_by(
            ["gateway"],
            q.increase(q.sel(q.PACKETS_IN, q.eq("step", step), q.GATEWAY), q.RANGE_WINDOW),
        )
        for step in (STEP_ENCODE, STEP_SCORE)
    )
    return table_panel(
        "Gateway health",
        "Per gateway: seconds since its tap last published packets (over a few minutes: the "
        "tap or its capture stopped; the AmlhpGatewaySilent rule fires at 15), packets/s "
        "at the tap, and the share of its packets in the time range that became dead "
        "letters (refused by the encoder: not IPv4, broken).",
        [
            Query(
                f"time() - {q.max_by(['gateway'], q.sel(q.LAST_SEEN, tap, q.GATEWAY))}",
                "silent (s)",
                instant=True,
            ),
            Query(
                q.sum_by(["gateway"], q.rate(q.sel(q.PACKETS_IN, tap, q.GATEWAY))),
                "packets/s",
                instant=True,
            ),
            Query(
                # dead letters carry no gateway: a gateway's are the packets its encode step
                # received that never reached the score step, over the dashboard's range
                f"1 - {encoded} / {received}",
                "dead-letter share",
                instant=True,
            ),
        ],
        width=FULL,
    )


# -- flow context -------------------------------------------------------------------------
def flow_verdicts_by_class() -> PanelBuilder:
    return timeseries_panel(
        "Flow verdicts by class",
        "Flow records the flow worker scored per second, by the flow model's class and "
        "decision (amlhp_flow_verdicts_total; accepted: confidence over the model's "
        "threshold, uncertain: below it or attributions off the class's profile).",
        [
            Query(
                q.sum_by(["class", "decision"], q.rate(q.sel(q.FLOW_VERDICTS, q.GATEWAY))),
                "{{class}} ({{decision}})",
            )
        ],
        width=QUARTER,
        stacked=True,
    )


def flow_alarms_by_kind() -> PanelBuilder:
    return timeseries_panel(
        "Flow alarms by kind",
        "Flow records per second that raised the attack flow model's alarm, by kind "
        "(amlhp_flow_alarms_total): evidence the alert stage fuses with the packets' "
        "(docs/alerts.md, flow evidence); alone they open no incident.",
        [Query(q.sum_by(["kind"], q.rate(q.sel(q.FLOW_ALARMS, q.GATEWAY))), "{{kind}}")],
        width=QUARTER,
        stacked=True,
    )


def device_inventory() -> PanelBuilder:
    return table_panel(
        "Device inventory",
        "Hosts by device type, per gateway (amlhp_devices from the flow worker; unknown: "
        "no class holds half of the host's flows). The hosts are in `amlhp devices`.",
        [
            Query(
                q.sum_by(["gateway", "device_type"], q.sel(q.DEVICES, q.GATEWAY)) + " > 0",
                "{{gateway}} {{device_type}}",
                instant=True,
            )
        ],
        width=QUARTER,
    )


def open_flows() -> PanelBuilder:
    return stat_panel(
        "Open flow records",
        "Flow records the flow workers hold open (amlhp_open_flows): their state, in "
        "the flow worker's table; it grows with active hosts, not with time.",
        [Query(f"sum({q.OPEN_FLOWS})", "open flows", instant=True)],
        width=QUARTER,
    )


def overview() -> Dashboard:
    """The dashboard ops teams keep open."""
    return new_dashboard(
        UID,
        "amlhp / Overview",
        "Incidents first, then gateway health, throughput, lag, latency and verdicts of "
        "the amlhp streaming pipeline. Annotations mark opened incidents and model reloads.",
        [
            row("Incidents"),
            open_incidents(),
            alerts_raised(),
            suppressed_incidents(),
            row("Gateways"),
            gateway_health(),
            row("Totals since the processes started"),
            packets_captured_total(),
            verdicts_total(),
            dead_letters_total(),
            stored_total(),
            row("Throughput and lag"),
            throughput_per_step(),
            bytes_per_step(),
            consumer_lag_records(),
            consumer_lag_seconds(),
            row("Flow context: flow verdicts and devices"),
            flow_verdicts_by_class(),
            flow_alarms_by_kind(),
            device_inventory(),
            open_flows(),
            row("Latency and verdicts"),
            latency_quantiles(),
            verdict_mix(),
            malicious_share(),
            uncertain_share(),
            verdicts_by_class(),
            delivery_failures(),
            faust_internals(),
        ],
        [
            annotation(
                "Incidents opened",
                q.sum_by(["kind"], q.increase(q.sel(q.ALERTS, q.eq("status", "opened")), "1m"))
                + " > 0",
                "red",
            ),
            annotation(
                "Model reloads",
                q.sum_by([], q.increase(q.sel(q.MODEL_LOADS, q.eq("result", "loaded")), "1m"))
                + " > 0",
                "blue",
            ),
        ],
    )
