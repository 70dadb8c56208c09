"""The Model dashboard: which model serves, how fast it scores, how sure it is.

Serving version and reloads, inference time per batch and per packet, batch sizes per
step and the distribution of the predicted class's probability.
"""

from __future__ import annotations

from grafana_foundation_sdk.models.dashboard import Dashboard

from amlhp.dashboards import queries as q
from amlhp.dashboards.layout import PanelBuilder, new_dashboard
from amlhp.dashboards.panels import (
    HALF,
    Query,
    bars_panel,
    heatmap_panel,
    row,
    seconds_panel,
    table_panel,
    timeseries_panel,
)
from amlhp.metrics.definitions import STEP_SCORE

UID = "amlhp-model"


def serving_version() -> PanelBuilder:
    return table_panel(
        "Serving model version",
        "The model version each worker serves (amlhp_model_info, value 1); two versions "
        "at once means a reload is rolling through the workers.",
        [Query(q.sum_by(["version"], q.MODEL_INFO), "{{version}}", instant=True)],
        width=HALF,
    )


def model_loads() -> PanelBuilder:
    return bars_panel(
        "Model loads and refusals",
        "Artifacts loaded (the first one included) and refused by the hot-reload watcher "
        "since the workers started; a refused artifact leaves the old model serving.",
        [Query(q.sum_by(["result"], q.MODEL_LOADS), "{{result}}", instant=True)],
    )


def learnt_sites() -> PanelBuilder:
    return table_panel(
        "Learnt sites",
        "Gateways judged by a site profile over the serving model (amlhp model adapt; "
        "amlhp_site_profile_info): their packets of a kind the window held, scored no "
        "higher than that kind was there, are benign. Empty: every gateway is judged by "
        "the model alone. docs/model.md#learning-a-site",
        [Query(q.sum_by(["gateway", "version"], q.SITE_PROFILES), "{{gateway}}", instant=True)],
        width=HALF,
    )


def inference_per_batch() -> PanelBuilder:
    return seconds_panel(
        "Inference time per batch",
        "p50 and p99 of the model's time to score one micro-batch.",
        q.INFERENCE_BATCH,
    )


def inference_per_packet() -> PanelBuilder:
    return seconds_panel(
        "Inference time per packet",
        "Mean and p99 of batch inference time divided by batch size.",
        q.INFERENCE_PACKET,
        typical="mean",
    )


def batch_sizes() -> PanelBuilder:
    return timeseries_panel(
        "Mean batch size per step",
        "Packets per batch: tap messages, encode messages, score micro-batches, sink flushes.",
        [Query(q.mean(q.BATCH, by=["step"]), "{{step}}")],
    )


def score_batch_sizes() -> PanelBuilder:
    return heatmap_panel(
        "Score micro-batch sizes",
        "How many packets each scored micro-batch held, over time.",
        [
            Query(
                q.sum_by(["le"], q.increase(q.sel(q.BATCH + "_bucket", q.eq("step", STEP_SCORE)))),
                "{{le}}",
                heatmap=True,
            )
        ],
    )


def score_distribution() -> PanelBuilder:
    return bars_panel(
        "Score distribution",
        "Verdicts by probability of the predicted class over the time range (cumulative "
        "buckets: le=0.9 counts every verdict scored at most 0.9).",
        [Query(q.buckets(q.SCORE, q.CLASS), "{{le}}", instant=True, heatmap=True)],
    )


def mean_score_per_class() -> PanelBuilder:
    return timeseries_panel(
        "Mean score per class",
        "Mean probability of the predicted class, per class: a drop hints at drift.",
        [Query(q.mean(q.SCORE, q.CLASS, by=["class"]), "{{class}}")],
        unit="percentunit",
        max_value=1,
    )


def model() -> Dashboard:
    """The dashboard for whoever owns the model."""
    return new_dashboard(
        UID,
        "amlhp / Model",
        "Serving version, inference time, batch sizes and scores of the amlhp model.",
        [
            row("Serving"),
            serving_version(),
            model_loads(),
            learnt_sites(),
            row("Speed"),
            inference_per_batch(),
            inference_per_packet(),
            batch_sizes(),
            score_batch_sizes(),
            row("Scores"),
            score_distribution(),
            mean_score_per_class(),
        ],
    )
