"""``amlhp alerts --json`` on the lab demo capture: the lab goal, through the real CLI."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from pathlib import Path

from amlhp.alerts.evaluate import BENIGN_NET, scenarios
from amlhp.alerts.kinds import kind_of
from amlhp.data import DEMO_CAPTURE

REQUIRED = {"gateway", "host", "kind", "first_seen", "last_seen", "packets", "score"}


def test_lab_demo_attackers_raise_incidents_and_benign_hosts_none(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts", str(DEMO_CAPTURE), "--json", "-g", "lab"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=True,
    )
    incidents = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    assert incidents, done.stderr[-2000:]
    assert all(set(i) >= REQUIRED for i in incidents)
    assert all(i["gateway"] == "lab" and i["packets"] > 0 for i in incidents)
    assert not [i for i in incidents if ipaddress.ip_address(i["host"]) in BENIGN_NET]
    covered = [
        cls
        for cls, address in scenarios(DEMO_CAPTURE.with_name("lab-demo.labels.yaml")).items()
        if any(
            i["kind"] == kind_of(cls) and (i["host"] == address or address in i["top_peers"])
            for i in incidents
        )
    ]
    assert len(covered) >= 20, covered  # of 22 scenarios (measured: 22, docs/alerts.md)
    assert len(incidents) <= 25  # one per attacking host and kind, not one per packet


def test_demo_incidents_do_not_depend_on_batching() -> None:
    """Every field of every incident, evidence and sketched counts included, is the same
    whatever the batches (the stream's micro-batches are not the offline ones)."""
    import pyarrow as pa

    from amlhp.alerts.offline import alerts_from_verdicts, scored_captures
    from amlhp.alerts.policy import AlertPolicy
    from amlhp.model.scorer import default_model_path, load_scorer

    scorer = load_scorer(default_model_path())
    batches = [b for _, part in scored_captures([DEMO_CAPTURE], scorer) for b in part]
    table = pa.Table.from_batches(batches).combine_chunks()

    def incidents(size: int) -> list[dict[str, object]]:
        run = alerts_from_verdicts(
            [("lab", table.to_batches(max_chunksize=size))], AlertPolicy(), scorer.version
        )
        return [{k: v for k, v in i.items() if k != "emitted_at_ns"} for i in run.incidents]

    whole = incidents(1000)
    assert len(whole) >= 15
    assert incidents(300) == whole


def test_piped_incident_table_is_whole_lines_then_a_json_summary(tmp_path: Path) -> None:
    """Piped, ``amlhp alerts`` prints tab-separated incidents with full hosts and times."""
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "alerts", str(DEMO_CAPTURE)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, check=True,
    )  # fmt: skip
    header, *rows, summary = done.stdout.splitlines()
    columns = header.split("\t")
    assert columns[:5] == ["gateway", "host", "device", "role", "kind"]
    assert rows
    assert json.loads(summary)["incidents"] == len(rows)
    for line in rows:
        cells = dict(zip(columns, line.split("\t"), strict=True))
        ipaddress.ip_address(cells["host"])  # whole, not cut
        # the host's device type from the capture's own flows, with its confidence
        assert re.fullmatch(r"[\w-]+ \(\d\.\d\d\)", cells["device"]), cells["device"]
        assert cells["first_seen"].endswith("Z")
        assert len(cells["first_seen"]) == len("2026-12-02T00:59:28.952Z")
