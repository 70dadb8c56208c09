"""The real Prometheus from infra/ answers and scrapes a target registered at run time."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from amlhp.infra import prometheus_server
from amlhp.infra.exceptions import PrometheusError
from amlhp.infra.prometheus_server import PrometheusLayout


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        data: dict[str, object] = json.loads(resp.read())
    return data


def test_config_scrapes_itself_and_registered_targets(tmp_path: Path) -> None:
    import yaml

    layout = PrometheusLayout(home=tmp_path, port=9999)
    config = yaml.safe_load(prometheus_server.render_config(layout))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["static_configs"] == [{"targets": ["127.0.0.1:9999"]}]
    assert jobs["amlhp"]["file_sd_configs"][0]["files"] == [f"{tmp_path}/targets/*.json"]

    path = prometheus_server.register_target(layout, "tap-1", "127.0.0.1:8000", {"stage": "tap"})
    assert json.loads(path.read_text()) == [
        {"targets": ["127.0.0.1:8000"], "labels": {"source": "tap-1", "stage": "tap"}}
    ]
    prometheus_server.unregister_target(layout, "tap-1")
    assert not path.exists()
    with pytest.raises(PrometheusError, match="alphanumeric"):
        prometheus_server.register_target(layout, "../evil", "127.0.0.1:1")


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_a_registered_exporter(prometheus_layout: PrometheusLayout) -> None:
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    assert _get(f"{prometheus_layout.url}/api/v1/status/buildinfo")["status"] == "success"
    registry = CollectorRegistry()
    counter = Counter("amlhp_infra_test_events", "events seen by the infra test", registry=registry)
    counter.inc(42)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    port = server.server_address[1]
    name = f"pytest-{port}"
    prometheus_server.register_target(prometheus_layout, name, f"127.0.0.1:{port}")
    try:
        query = urllib.parse.urlencode(
            {"query": f'amlhp_infra_test_events_total{{source="{name}"}}'}
        )
        value = None
        deadline = time.monotonic() + 45  # file_sd refresh 5 s + scrape interval 5 s
        while value is None and time.monotonic() < deadline:
            result = _get(f"{prometheus_layout.url}/api/v1/query?{query}")["data"]
            series = result["result"]  # type: ignore[index]
            if series:
                value = float(series[0]["value"][1])
            else:
                time.sleep(1)
        assert value == 42.0
    finally:
        prometheus_server.unregister_target(prometheus_layout, name)
        server.shutdown()
        thread.join(5)
