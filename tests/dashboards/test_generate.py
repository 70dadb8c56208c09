"""Dashboards as code: the committed JSON is what the code generates, and it is sound."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from amlhp.dashboards.generate import (
    DASHBOARDS,
    GENERATED_DIR,
    expand,
    load_generated,
    panel_queries,
    render_all,
    stale_files,
    write_generated,
)
from amlhp.dashboards.panels import DATASOURCE_UID
from amlhp.dashboards.push import datasource_body
from amlhp.metrics.definitions import PipelineMetrics
from tests.support.synthetic import synthetic_verdicts

REPO = Path(__file__).resolve().parents[2]
LAG_METRICS = {"amlhp_consumer_lag_records", "amlhp_consumer_lag_seconds"}


def test_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    assert stale_files() == [], "run `amlhp dashboards generate` and commit the result"
    write_generated(tmp_path)
    for path in sorted(GENERATED_DIR.glob("*.json")):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    assert {p.name for p in tmp_path.glob("*.json")} == {f"{s}.json" for s in DASHBOARDS}


def test_generation_is_deterministic_and_sorted() -> None:
    first, second = render_all(), render_all()
    assert first == second
    for text in first.values():
        data = json.loads(text)
        assert text == json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def test_stale_files_notices_an_edit(tmp_path: Path) -> None:
    write_generated(tmp_path)
    path = tmp_path / "overview.json"
    path.write_text(path.read_text().replace("Throughput per step", "Hand edited"))
    (tmp_path / "old.json").write_text("{}")
    assert stale_files(tmp_path) == ["old.json", "overview.json"]


def test_required_dashboards_panels_and_variables() -> None:
    dashboards = load_generated()
    titles = {
        d["uid"]: {p["title"] for p in d["panels"] if p["type"] != "row"}
        for d in dashboards.values()
    }
    assert {
        "Throughput per step",
        "Consumer lag (records)",
        "Consumer lag (seconds)",
        "End-to-end latency (capture -> verdict)",
        "Verdict mix over time",
        "Malicious share per gateway",
        "Open incidents",
        "Alerts raised over time",
        "Suppressed alert rows by rule",
        "Gateway health",
    } <= titles["amlhp-overview"]
    overview = dashboards["overview.json"]
    # incidents first: the first row of the ops team's dashboard
    first_row = next(p for p in overview["panels"] if p["type"] == "row")
    assert first_row["title"] == "Incidents"
    marks = {a["name"]: a["expr"] for a in overview["annotations"]["list"]}
    assert 'status="opened"' in marks["Incidents opened"]
    assert 'result="loaded"' in marks["Model reloads"]
    assert {
        "Inference time per batch",
        "Inference time per packet",
        "Mean batch size per step",
        "Serving model version",
        "Score distribution",
    } <= titles["amlhp-model"]
    assert {
        "Dead letters by step and reason",
        "Unencodable packets by reason (since start)",
    } <= titles["amlhp-data-quality"]
    for data in dashboards.values():
        variables = {v["name"]: v for v in data["templating"]["list"]}
        assert {"datasource", "gateway", "class"} <= set(variables)
        assert variables["datasource"]["current"]["value"] == DATASOURCE_UID
        for name in ("gateway", "class"):
            assert variables[name]["includeAll"] is True
            assert variables[name]["allValue"] == ".*"
        ids = [p["id"] for p in data["panels"]]
        assert len(ids) == len(set(ids))
        for panel in data["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["targets"], panel["title"]
            assert panel["description"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


def test_panels_use_the_template_variables() -> None:
    queries = [q for d in load_generated().values() for q in panel_queries(d)]
    overview = [q for q in queries if q.dashboard == "amlhp-overview"]
    assert sum('gateway=~"$gateway"' in q.expr for q in overview) >= 5
    assert any('class=~"$class"' in q.expr for q in overview)


def _exposed_names() -> set[str]:
    """Every sample name the pipeline's processes expose once each step has done work."""
    metrics = PipelineMetrics()
    metrics.init_steps(["tap", "encode", "score", "sink"], ["non_ip"])
    for step in ("tap", "encode", "score", "sink"):
        metrics.count_in(step, "g", 1, 1)
        metrics.count_out(step, "g", 1, 1)
    metrics.record_verdicts(synthetic_verdicts(50))
    metrics.set_model_version("v")
    metrics.model_loads.labels("loaded").inc()
    metrics.site_profiles.labels("g", "v+site").set(1)
    metrics.delivery_failures.labels("tap")
    alert = {"gateway": "g", "kind": "scan", "status": "opened"}
    metrics.count_alerts([alert])
    metrics.set_open_incidents({("g", "scan"): 1})
    import pyarrow as pa

    flows = {"gateway": ["g", "g"], "label": ["HueBridge", "cam"], "uncertain": [False, True],
             "attack_kind": ["scan", "c2"], "attack_alarm": [True, False]}  # fmt: skip
    metrics.record_flow_verdicts(pa.RecordBatch.from_pydict(flows))
    metrics.set_devices({("g", "HueBridge"): 1})
    metrics.open_flows.set(3)
    metrics.count_suppressed([{"suppressed_by": "printer"}], ["printer"])
    text = generate_latest(metrics.registry).decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    from faust.sensors.prometheus import FaustMetrics
    from prometheus_client import CollectorRegistry

    faust_registry = CollectorRegistry()
    faust = FaustMetrics.create(faust_registry, "amlhp_faust")
    faust.total_error_messages_sent.inc(0)
    text = generate_latest(faust_registry).decode()
    names |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names | LAG_METRICS


def test_every_query_names_only_metrics_the_pipeline_exposes() -> None:
    exposed = _exposed_names()
    functions = {"sum", "by", "rate", "increase", "histogram_quantile", "max", "le", "on", "or",
                 "time"}  # fmt: skip
    for d in load_generated().values():
        for query in panel_queries(d):
            expr = re.sub(r'\{[^}]*\}|"[^"]*"|\[[^\]]*\]', "", query.expr)
            names = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr)) - functions
            labels = {"step", "reason", "class", "gateway", "group", "topic", "partition"}
            labels |= {"version", "result", "kind", "status", "decision", "device_type", "rule"}
            unknown = {n for n in names - labels if not re.fullmatch(r"e\d*", n)}
            assert unknown <= exposed, (query.panel, sorted(unknown - exposed))


def test_expand_substitutes_grafana_variables() -> None:
    expr = 'rate(x{gateway=~"$gateway",c=~"${class}"}[$__rate_interval]) / $__range'
    got = expand(expr, {"gateway": ".*", "class": "a|b", "__rate_interval": "30s", "__range": "5m"})
    assert got == 'rate(x{gateway=~".*",c=~"a|b"}[30s]) / 5m'


def test_provisioning_files_match_the_code() -> None:
    prov = REPO / "dashboards" / "provisioning"
    ds = yaml.safe_load((prov / "datasource.yaml").read_text())["datasources"][0]
    body = datasource_body(ds["url"])
    for key in ("uid", "name", "type", "access", "jsonData"):
        assert ds[key] == body[key], key
    providers = yaml.safe_load((prov / "dashboards.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"]


def test_compose_file_wires_kafka_prometheus_and_grafana() -> None:
    compose = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"kafka", "prometheus", "grafana"} <= set(services)
    mounts = " ".join(services["grafana"]["volumes"])
    assert "dashboards/provisioning" in mounts
    assert "dashboards/generated" in mounts


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_each_dashboard_builds_alone(name: str) -> None:
    dashboard = DASHBOARDS[name]()
    assert dashboard.uid is not None
    assert dashboard.uid.startswith("amlhp-")
