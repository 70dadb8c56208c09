"""A stage's /metrics endpoint over HTTPS with basic authentication, scraped by a real
Prometheus configured by ``amlhp infra prometheus up``'s own code."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

from amlhp.infra import prometheus_server
from amlhp.infra.fetch import prometheus_binary
from amlhp.infra.kafka_security import SecurityFiles, ensure_certificates
from amlhp.infra.prometheus_server import PrometheusLayout, with_scrape_security
from amlhp.metrics.server import start_stage_metrics
from amlhp.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _status(url: str, context: ssl.SSLContext, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5, context=context) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_a_stage_over_tls_with_credentials(tmp_path: Path) -> None:
    if prometheus_binary() is None:
        pytest.skip("Debian's prometheus is not installed (make setup installs it)")
    files = SecurityFiles(tmp_path / "tls")
    ensure_certificates(files, "127.0.0.1")
    password = f"pw-{uuid.uuid4().hex}"
    settings = Settings.model_validate(
        {
            "metrics_tls_cert": files.broker_keystore,  # chain and key in one PEM file
            "metrics_tls_key": files.broker_keystore,
            "metrics_tls_ca": files.ca,
            "metrics_user": "prometheus",
            "metrics_password": password,
        }
    )
    stage = start_stage_metrics("tap", 0, host="127.0.0.1", settings=settings)
    assert stage.server is not None
    url = stage.server.url
    assert url.startswith("https://127.0.0.1:")
    trusted = ssl.create_default_context(cafile=str(files.ca))
    assert _status(url, trusted) == 401
    assert _status(url, trusted, "prometheus:wrong") == 401
    assert _status(url, trusted, f"prometheus:{password}") == 200
    with pytest.raises(urllib.error.URLError):  # a stranger's CA: the handshake fails
        _status(url, ssl.create_default_context(), f"prometheus:{password}")
    with pytest.raises((urllib.error.URLError, ConnectionError)):  # no plain HTTP at all
        urllib.request.urlopen(url.replace("https:", "http:"), timeout=5)

    layout = with_scrape_security(
        PrometheusLayout(home=REPO_ROOT / "var" / f"pytest-prometheus-tls-{uuid.uuid4().hex[:6]}",
                         port=_free_port()),
        https=True, ca_file=files.ca, username="prometheus", password=password,
    )  # fmt: skip
    try:
        prometheus_server.up(layout)
        job = yaml.safe_load(layout.config.read_text())["scrape_configs"][1]
        assert job["scheme"] == "https"
        assert job["basic_auth"] == {"username": "prometheus",
                                     "password_file": str(layout.password_file)}  # fmt: skip
        assert password not in layout.config.read_text()
        assert layout.password_file.stat().st_mode & 0o077 == 0
        prometheus_server.register_target(layout, "tap-tls", stage.server.target)
        query = urllib.parse.urlencode({"query": 'up{source="tap-tls"}'})
        deadline, value = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"{layout.url}/api/v1/query?{query}", timeout=5) as r:
                result = json.loads(r.read())["data"]["result"]
            value = result[0]["value"][1] if result else None
            if value == "1":
                break
            time.sleep(1)
        assert value == "1", f"Prometheus never scraped the endpoint (up={value})"
    finally:
        prometheus_server.down(layout, purge=True)
        stage.close()
