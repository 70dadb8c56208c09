"""The test that matters for the dashboards: real Prometheus scrapes a real pipeline.

A private Prometheus (Debian's binary, started through ``amlhp.infra.prometheus_server``
on a free port, so that no other test's series mix in) scrapes a worker, a sink, the
alerts stage and a tap process replaying the demo capture through the real broker. Every
query of every panel of every generated dashboard is then evaluated through Prometheus's
HTTP API, as Grafana would send it: each returns data, and the totals panels agree with
the run's exact accounting (packets captured, verdicts per class, dead letters per reason).
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from amlhp.dashboards.generate import PanelQuery, expand, load_generated, panel_queries
from amlhp.data import DEMO_CAPTURE
from amlhp.infra import prometheus_server
from amlhp.infra.fetch import prometheus_binary
from amlhp.infra.prometheus_server import PrometheusLayout
from amlhp.pipeline.children import StageProcess
from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted

from .conftest import StageStarter

pytestmark = [pytest.mark.slow, pytest.mark.prometheus, pytest.mark.kafka]

GARBAGE = [b"", b"\xff" * 100, b"ARROW1\x00\x00 not really", b'{"json": true}']
PACE = 7.5  # the 180 s lab demo capture in about 24 s: rates span several scrapes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_prometheus(tmp_path: Path) -> Iterator[PrometheusLayout]:
    """A Prometheus of this test alone: its series are this run's series only."""
    if prometheus_binary() is None:
        pytest.skip("prometheus is not installed (run `amlhp infra fetch` or `make setup`)")
    layout = PrometheusLayout(home=tmp_path / "prometheus", port=free_port())
    prometheus_server.up(layout)
    try:
        yield layout
    finally:
        prometheus_server.down(layout, purge=True)


class PromAPI:
    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def instant(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", **params)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    def range(self, expr: str, start: float, end: float, step: str = "5") -> list[dict[str, Any]]:
        data = self._get(
            "/api/v1/query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step
        )
        return list(data["result"])

    def scalar(self, expr: str) -> float | None:
        result = self.instant(expr)
        return float(result[0]["value"][1]) if result else None


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def wait_for(what: str, check: Any, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last is True:
            return
        time.sleep(1.0)
    pytest.fail(f"timed out waiting for {what}; last state: {last}")


def learnt_site(folder: Path, gateway: str) -> Path:
    """A site profile for ``gateway`` over the default model (one kind)."""
    import numpy as np

    from amlhp.model.artifact import read_metadata
    from amlhp.model.scorer import default_model_path
    from amlhp.model.site import KindMemory, SiteProfile

    memory = KindMemory.learn(np.array([7, 7], np.uint64), [0.5, 0.6], [1, 1])
    base = str(read_metadata(default_model_path())["version"])
    SiteProfile(memory, (gateway,), base).save(folder / gateway, {})
    return folder


def tap_summary(stage: StageProcess) -> dict[str, Any] | None:
    for line in stage.log_path.read_text(errors="replace").splitlines():
        if line.startswith('{"gateway"'):
            summary: dict[str, Any] = json.loads(line)
            return summary
    stage.check_alive()
    return None


def test_every_panel_query_returns_data_and_totals_agree(
    pipeline_settings: Settings,
    stages: StageStarter,
    demo_capture: Path,
    private_prometheus: PrometheusLayout,
    tmp_path: Path,
) -> None:
    pytest.importorskip(
        "amlhp.model.scorer", reason="amlhp.model.scorer (the serving model) is not there yet"
    )
    prom = PromAPI(private_prometheus.url)
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "verdicts"
    ports = {name: free_port() for name in ("worker", "sink", "tap", "alerts", "flows")}

    def register(name: str) -> None:
        prometheus_server.register_target(
            private_prometheus, f"{name}-{run}", f"127.0.0.1:{ports[name]}", {"run": run}
        )

    started = time.time()
    # a learnt site for a gateway that sends nothing here: the learnt-sites panel has data
    sites = learnt_site(tmp_path / "sites", "gw-learnt")
    worker = stages(
        "worker", "worker", "--metrics-port", str(ports["worker"]), "--sites", str(sites)
    )
    sink = stages(
        "sink", "sink", "--out", str(out), "--roll-seconds", "1",
        "--metrics-port", str(ports["sink"]),
    )  # fmt: skip
    # incidents stay open to the end (idle close far away): the open-incidents panel has
    # data; an allow-list rule that never matches has its series at 0 (the suppression
    # panel shows it)
    allow = tmp_path / "allow.yaml"
    allow.write_text("rules:\n  - {id: never, reason: test, host: 192.0.2.1}\n")
    alert_settings = {"alert_idle_close_s": 600.0, "alert_suppressions": allow}
    alerts = stages(
        "alerts", "alerts-stage", "--metrics-port", str(ports["alerts"]),
        settings=pipeline_settings.model_copy(update=alert_settings),
    )  # fmt: skip
    # the flow worker: its flow verdicts and device inventory rows (idle close soon after
    # the tap's last packet)
    flows = stages("flows", "flows", "worker", "--metrics-port", str(ports["flows"]),
                   "--idle-close", "3")  # fmt: skip
    scraped = ("worker", "sink", "alerts", "flows")
    for name in scraped:
        register(name)

    def all_up() -> bool | dict[str, float]:
        for stage in (worker, sink, alerts, flows):
            stage.check_alive()
        up = by_label(prom.instant(f'up{{run="{run}"}}'), "source")
        return up == {f"{n}-{run}": 1.0 for n in scraped} or up

    wait_for("Prometheus to scrape the worker, the sink, the alerts stage and flows", all_up)

    producer = Producer({"bootstrap.servers": pipeline_settings.bootstrap_servers})
    for value in GARBAGE:
        producer.produce(pipeline_settings.topic_raw, key=b"gw-bad", value=value)
    assert producer.flush(30) == 0

    gateway = f"demo-{run}"
    tap = stages(
        "tap", "tap", str(demo_capture), "--gateway", gateway, "--pace", str(PACE),
        "--metrics-port", str(ports["tap"]), "--linger", "600",
    )  # fmt: skip
    register("tap")
    summary: dict[str, Any] = {}

    def tap_done() -> bool:
        found = tap_summary(tap)
        if found is not None:
            summary.update(found)
        return found is not None

    wait_for("the tap to replay the capture", tap_done, timeout_s=180)
    packets = int(summary["packets"])
    manifest = json.loads(DEMO_CAPTURE.with_suffix(".manifest.json").read_text())
    assert packets == manifest["total_packets"]
    assert summary["failed_packets"] == 0

    ledger = wait_accounted(
        pipeline_settings, out, {gateway: (0, packets)}, [worker, sink], timeout_s=240
    )
    assert ledger.complete, ledger.as_dict()
    assert ledger.dead_messages == len(GARBAGE)
    assert ledger.duplicate_verdicts == 0

    def scraped_final_counts() -> bool | dict[str, float | None]:
        state = {
            "tap": prom.scalar('sum(amlhp_packets_in_total{step="tap"})'),
            "verdicts": prom.scalar("sum(amlhp_verdicts_total)"),
            "stored": prom.scalar('sum(amlhp_packets_out_total{step="sink"})'),
            "lag": prom.scalar("sum(amlhp_consumer_lag_records)"),
            "opened": prom.scalar('sum(amlhp_alerts_total{status="opened"})'),
            "flows": prom.scalar("sum(amlhp_flow_verdicts_total)"),
            "devices": prom.scalar("sum(amlhp_devices)"),
        }
        want = {"tap": packets, "verdicts": ledger.verdicts, "stored": ledger.verdicts, "lag": 0}
        seen = {k: state.pop(k) for k in ("opened", "flows", "devices")}
        return (state == want and all(seen.values())) or {**state, **seen}

    wait_for("Prometheus to scrape the final counts", scraped_final_counts)
    time.sleep(6)  # one more scrape, so every panel's last sample is the final one
    end = time.time()

    values = {
        "gateway": ".*",
        "class": ".*",
        "datasource": "",
        "__rate_interval": "30s",
        "__range": f"{math.ceil(end - started) + 30}s",
    }
    dashboards = load_generated()
    queries = [q for d in dashboards.values() for q in panel_queries(d)]
    assert len(queries) >= 25
    empty = []
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for query in queries:
        expr = expand(query.expr, values)
        assert "$" not in expr, expr
        if query.instant:
            result = prom.instant(expr, at=end)
            finite = [r for r in result if math.isfinite(float(r["value"][1]))]
        else:
            result = prom.range(expr, started - 10, end)
            finite = [r for r in result if any(math.isfinite(float(v)) for _, v in r["values"])]
        results[(query.dashboard, query.panel, query.ref_id)] = result
        if not finite:
            empty.append(f"{query.dashboard} / {query.panel} [{query.ref_id}]: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)

    def instant_of(dashboard: str, panel: str, ref: str = "A") -> list[dict[str, Any]]:
        return results[(dashboard, panel, ref)]

    def total(dashboard: str, panel: str) -> float:
        (only,) = instant_of(dashboard, panel)
        return float(only["value"][1])

    assert total("amlhp-overview", "Packets captured") == packets
    assert total("amlhp-overview", "Verdicts") == ledger.verdicts
    assert total("amlhp-overview", "Dead-letter packets") == ledger.dead_packets
    assert total("amlhp-overview", "Verdicts stored") == ledger.verdicts
    assert total("amlhp-data-quality", "Packets in flight or lost") == 0
    per_class = by_label(instant_of("amlhp-overview", "Verdicts per class (since start)"), "class")
    assert per_class == {k: float(v) for k, v in ledger.verdicts_by_class.items()}
    per_reason = by_label(
        instant_of("amlhp-data-quality", "Unencodable packets by reason (since start)"), "reason"
    )
    assert {k: v for k, v in per_reason.items() if v} == {
        k: float(v) for k, v in ledger.dead_by_reason.items()
    }
    invalid = by_label(
        instant_of("amlhp-data-quality", "Messages that were not batches (since start)"), "step"
    )
    assert invalid == {"encode": len(GARBAGE), "score": 0}
    failures = by_label(instant_of("amlhp-data-quality", "Delivery failures (since start)"), "step")
    assert set(failures) == {"tap", "worker"}
    assert set(failures.values()) == {0.0}
    open_now = instant_of("amlhp-overview", "Open incidents")
    assert {r["metric"]["gateway"] for r in open_now} == {gateway}
    # incidents quiet for alert_quiet_s of capture time may have closed already
    raised = prom.instant('sum(amlhp_alerts_total{status="opened"})', at=end)
    assert 1 <= sum(float(r["value"][1]) for r in open_now) <= float(raised[0]["value"][1])
    learnt = by_label(instant_of("amlhp-model", "Learnt sites"), "gateway")
    assert learnt == {"gw-learnt": 1.0}
    versions = by_label(instant_of("amlhp-model", "Serving model version"), "version")
    parquet_versions = set(read_verdicts(out).column("model_version").to_pylist())
    assert set(versions) == parquet_versions
    _check_final_lag(results, queries)


def _check_final_lag(
    results: dict[tuple[str, str, str], list[dict[str, Any]]], queries: list[PanelQuery]
) -> None:
    """Caught up at the end: every partition of every group has lag 0 in both panels."""
    for title in ("Consumer lag (records)", "Consumer lag (seconds)"):
        (query,) = [q for q in queries if q.panel == title]
        series = results[(query.dashboard, query.panel, query.ref_id)]
        topics = {s["metric"]["topic"] for s in series}
        # raw (worker group), verdicts (sink and alerts groups)
        assert len(topics) == 2, topics
        for s in series:
            last = float(s["values"][-1][1])
            assert last == 0, (title, s["metric"], last)
