"""`amlhp dashboards push`: against a real Grafana when GRAFANA_URL is set, else skipped.

A Grafana server cannot be installed from this machine's package sources, so the upload
itself is only tested where one is reachable: set GRAFANA_URL (for example
http://admin:admin@127.0.0.1:3000) and optionally AMLHP_GRAFANA_TOKEN.
"""

from __future__ import annotations

import os
import socket

import pytest
from pydantic import SecretStr

from amlhp.dashboards.exceptions import DashboardsError
from amlhp.dashboards.generate import load_generated
from amlhp.dashboards.panels import DATASOURCE_UID
from amlhp.dashboards.push import FOLDER_UID, connect, push_dashboards
from amlhp.settings import load_settings


def test_token_comes_from_the_environment_as_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMLHP_GRAFANA_TOKEN", "glsa_not_a_real_token")
    settings = load_settings()
    assert isinstance(settings.grafana_token, SecretStr)
    assert settings.grafana_token.get_secret_value() == "glsa_not_a_real_token"
    assert "glsa_not_a_real_token" not in repr(settings)
    assert "glsa_not_a_real_token" not in str(settings.redacted())
    monkeypatch.delenv("AMLHP_GRAFANA_TOKEN")
    assert load_settings().grafana_token is None


def test_unreachable_grafana_is_a_clear_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DashboardsError, match="Grafana"):
        push_dashboards(f"http://127.0.0.1:{port}", None, "http://127.0.0.1:9090")


def test_push_to_a_real_grafana() -> None:
    url = os.environ.get("GRAFANA_URL")
    if not url:
        pytest.skip(
            "GRAFANA_URL is not set: no Grafana server to push to (none can be installed "
            "here); set GRAFANA_URL=http://admin:admin@127.0.0.1:3000 to run this test"
        )
    token = load_settings().grafana_token
    prometheus_url = os.environ.get("AMLHP_TEST_PROMETHEUS_URL", "http://127.0.0.1:9090")
    result = push_dashboards(url, token, prometheus_url)
    again = push_dashboards(url, token, prometheus_url)
    assert again.datasource.startswith("exists")
    assert again.folder == "exists"
    api = connect(url, token)
    assert api.datasource.get_datasource_by_uid(DATASOURCE_UID)["type"] == "prometheus"
    for name, body in load_generated().items():
        stored = api.dashboard.get_dashboard(body["uid"])
        assert stored["dashboard"]["title"] == body["title"], name
        assert stored["meta"]["folderUid"] == FOLDER_UID
        assert len(stored["dashboard"]["panels"]) == len(body["panels"])
    assert set(result.dashboards) == set(load_generated())
