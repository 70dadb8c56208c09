"""The Data quality dashboard: what could not become a verdict, and why.

Dead letters per step and reason, packets the encoder could not represent by reason,
whole messages that were not batches, and the packets not yet accounted for.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from amlhp.dashboards import queries as q
from amlhp.dashboards.layout import PanelBuilder, new_dashboard
from amlhp.dashboards.panels import HALF, Query, bars_panel, row, stat_panel, timeseries_panel
from amlhp.metrics.definitions import STEP_ENCODE, STEP_TAP

UID = "amlhp-data-quality"


def dead_letter_rate() -> PanelBuilder:
    return timeseries_panel(
        "Dead letters by step and reason",
        "Dead letters per second, by the step that refused them and the reason code.",
        [
            Query(
                q.sum_by(["step", "reason"], q.rate(q.sel(q.DEAD_LETTERS))),
                "{{step}}: {{reason}}",
            )
        ],
        unit="pps",
        stacked=True,
    )


def unencodable_by_reason() -> PanelBuilder:
    return bars_panel(
        "Unencodable packets by reason (since start)",
        "Packets the encoder refused since the workers started, by reason code "
        "(amlhp.encoders.reasons: non_ip, arp, truncated_transport, ...).",
        [
            Query(
                q.sum_by(
                    ["reason"],
                    q.sel(q.DEAD_LETTERS, q.eq("step", STEP_ENCODE), q.eq("kind", "packet")),
                ),
                "{{reason}}",
                instant=True,
            )
        ],
    )


def invalid_messages() -> PanelBuilder:
    return bars_panel(
        "Messages that were not batches (since start)",
        "Whole Kafka messages refused because they are not a valid batch: dead letters of "
        "the encode and score steps, and messages the sink skipped.",
        [
            Query(
                q.sum_by(["step"], q.sel(q.DEAD_LETTERS, q.eq("kind", "message"))),
                "dead letter: {{step}}",
                instant=True,
            ),
            Query(q.sum_by(["step"], q.SKIPPED), "skipped: {{step}}", instant=True),
        ],
    )


def dead_letter_share() -> PanelBuilder:
    dead = q.sum_by([], q.rate(q.sel(q.DEAD_LETTERS, q.eq("kind", "packet"))))
    packets = q.sum_by([], q.rate(q.sel(q.PACKETS_IN, q.eq("step", STEP_ENCODE))))
    return timeseries_panel(
        "Dead-letter share of packets",
        "Share of the packets reaching the encoder that became dead letters.",
        [Query(q.ratio(dead, packets), "dead-letter share")],
        unit="percentunit",
        max_value=1,
    )


def unaccounted_packets() -> PanelBuilder:
    captured = q.sum_by([], q.sel(q.PACKETS_IN, q.eq("step", STEP_TAP)))
    verdicts = q.sum_by([], q.VERDICTS)
    dead = q.sum_by([], q.sel(q.DEAD_LETTERS, q.eq("kind", "packet")))
    return stat_panel(
        "Packets in flight or lost",
        "Packets captured minus verdicts minus dead-letter packets, since the processes "
        "started: packets still in the pipeline; 0 once it has caught up.",
        [Query(f"{captured} - {verdicts} - {dead}", "unaccounted", instant=True)],
        width=HALF,
    )


def delivery_failures_total() -> PanelBuilder:
    return stat_panel(
        "Delivery failures (since start)",
        "Kafka messages a producer failed to deliver, by step.",
        [Query(q.sum_by(["step"], q.DELIVERY_FAILURES), "{{step}}", instant=True)],
        width=HALF,
    )


def data_quality() -> Dashboard:
    """The dashboard data engineers check when counts do not add up."""
    return new_dashboard(
        UID,
        "amlhp / Data quality",
        "Dead letters, unencodable packets and accounting of the amlhp pipeline.",
        [
            row("Dead letters"),
            dead_letter_rate(),
            dead_letter_share(),
            unencodable_by_reason(),
            invalid_messages(),
            row("Accounting"),
            unaccounted_packets(),
            delivery_failures_total(),
        ],
    )
