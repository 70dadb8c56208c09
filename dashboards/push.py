"""Upload the generated dashboards to a Grafana server with grafana-client.

The Prometheus data source is created when Grafana lacks it (uid
:data:`DATASOURCE_UID`, the uid the dashboards' ``datasource`` variable selects) and
checked when it exists: a data source of another type under that uid is an error, one
pointing at another URL is reported and left alone. Dashboards go into one folder and
overwrite their previous version (same uid). The token comes from the settings
(``AMLHP_GRAFANA_TOKEN``), never from a file; a URL with ``user:password@`` works too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import SecretStr

from amlhp.dashboards.exceptions import DashboardsError
from amlhp.dashboards.generate import load_generated
from amlhp.dashboards.panels import DATASOURCE_NAME, DATASOURCE_UID

FOLDER_UID = "amlhp"
FOLDER_TITLE = "amlhp"
#: Prometheus scrapes every 5 s (amlhp.infra.prometheus_server): Grafana's $__rate_interval
#: is then at least 4 x 5 s.
SCRAPE_INTERVAL = "5s"


def datasource_body(prometheus_url: str) -> dict[str, Any]:
    """The data source as Grafana's API (and the provisioning file) describe it."""
    return {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "access": "proxy",
        "url": prometheus_url,
        "isDefault": False,
        "jsonData": {"timeInterval": SCRAPE_INTERVAL, "httpMethod": "POST"},
    }


@dataclass
class PushResult:
    datasource: str
    folder: str
    dashboards: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def connect(grafana_url: str, token: SecretStr | None, timeout_s: float = 10.0) -> Any:
    from grafana_client import GrafanaApi

    credential = token.get_secret_value() if token is not None else None
    return GrafanaApi.from_url(grafana_url, credential=credential, timeout=timeout_s)


def ensure_datasource(api: Any, prometheus_url: str, warnings: list[str]) -> str:
    """Create the data source or check the existing one; returns what happened."""
    from grafana_client.client import GrafanaClientError

    try:
        existing = api.datasource.get_datasource_by_uid(DATASOURCE_UID)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.datasource.create_datasource(datasource_body(prometheus_url))
        return "created"
    if existing.get("type") != "prometheus":
        raise DashboardsError(
            f"Grafana data source {DATASOURCE_UID!r} has type {existing.get('type')!r}, "
            "not prometheus; rename it or delete it"
        )
    if str(existing.get("url", "")).rstrip("/") != prometheus_url.rstrip("/"):
        warnings.append(
            f"data source {DATASOURCE_UID!r} points at {existing.get('url')!r}, not "
            f"{prometheus_url!r}; left as it is"
        )
        return "exists (other URL)"
    return "exists"


def ensure_folder(api: Any) -> str:
    from grafana_client.client import GrafanaClientError

    try:
        api.folder.get_folder(FOLDER_UID)
        return "exists"
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
    api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
    return "created"


def push_dashboards(
    grafana_url: str,
    token: SecretStr | None,
    prometheus_url: str,
    *,
    api: Any = None,
) -> PushResult:
    """Data source, folder, then every dashboard of ``dashboards/generated``."""
    from grafana_client.client import GrafanaException

    dashboards = load_generated()
    try:
        api = api or connect(grafana_url, token)
        warnings: list[str] = []
        result = PushResult(ensure_datasource(api, prometheus_url, warnings), ensure_folder(api))
        result.warnings = warnings
        for name, body in dashboards.items():
            body = {k: v for k, v in body.items() if k != "id"}
            answer = api.dashboard.update_dashboard(
                {
                    "dashboard": body,
                    "folderUid": FOLDER_UID,
                    "overwrite": True,
                    "message": "amlhp dashboards push",
                }
            )
            result.dashboards[name] = str(answer.get("url") or answer.get("uid") or body["uid"])
    except GrafanaException as exc:
        raise DashboardsError(
            f"Grafana at {grafana_url} refused the request ({exc.status_code}): {exc.message}"
        ) from exc
    except OSError as exc:
        raise DashboardsError(f"cannot reach Grafana at {grafana_url}: {exc}") from exc
    return result
