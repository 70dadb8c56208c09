"""`amlhp report`: a self-contained HTML page whose plots render in headless Chromium."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from amlhp.dashboards.exceptions import DashboardsError
from amlhp.dashboards.report import load_verdicts, write_report
from tests.support.browser import headless
from tests.support.synthetic import synthetic_verdicts, write_dataset

START_NS = 1_700_000_000 * 10**9


@pytest.fixture
def run_dir(tmp_path: Path) -> tuple[Path, pa.Table]:
    table = synthetic_verdicts(3000, start_ns=START_NS, span_s=120.0)
    root = tmp_path / "verdicts"
    write_dataset(table, root)
    return root, table


def test_report_is_self_contained_with_every_plot(
    run_dir: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    root, table = run_dir
    out = tmp_path / "report.html"
    summary = write_report(root, out)
    page = out.read_text()
    assert summary["verdicts"] == table.num_rows
    assert summary["plots"] == ["verdict-mix", "malicious-share", "latency", "top-destinations"]
    assert page.count('<img class="plot"') == 4
    assert 'data-plots-expected="4"' in page
    assert not re.search(r'(src|href)="(https?:|//|file:)', page), "the page must not load anything"
    assert f"{table.num_rows:,}" in page


def test_confusion_matrix_from_a_labels_file(
    run_dir: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    root, table = run_dir
    truth = np.array(table.column("label").to_pylist(), dtype=object)
    truth[::10] = "dos_synflood"  # some wrong predictions
    labels = tmp_path / "truth.parquet"
    pq.write_table(
        pa.table(
            {"gateway": table.column("gateway"), "seq": table.column("seq"), "label": list(truth)}
        ),
        labels,
    )
    out = tmp_path / "report.html"
    summary = write_report(root, out, truth=labels)
    assert summary["plots"][-1] == "confusion"
    accuracy = float(np.mean(truth == np.array(table.column("label").to_pylist(), dtype=object)))
    assert f"accuracy {accuracy:.1%}" in out.read_text()


def test_time_range_selects_packets(run_dir: tuple[Path, pa.Table]) -> None:
    root, table = run_dir
    since = datetime.fromtimestamp(START_NS / 1e9 + 30, UTC)
    until = datetime.fromtimestamp(START_NS / 1e9 + 60, UTC)
    part = load_verdicts(root, since, until)
    ts = np.array(table.column("ts_ns").to_pylist())
    assert part.num_rows == int(((ts >= START_NS + 30e9) & (ts < START_NS + 60e9)).sum())
    with pytest.raises(DashboardsError, match="time range"):
        load_verdicts(root, until=datetime.fromtimestamp(1, UTC))
    with pytest.raises(DashboardsError, match="no verdict dataset"):
        load_verdicts(root / "missing")


def test_plots_render_in_headless_chromium(run_dir: tuple[Path, pa.Table], tmp_path: Path) -> None:
    root, _ = run_dir
    out = tmp_path / "report.html"
    write_report(root, out)
    dom = headless("--virtual-time-budget=10000", "--dump-dom", out.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stdout[:500]
    assert 'data-plots-expected="4"' in body.group(0)
    assert 'data-plots-rendered="4"' in body.group(0), body.group(0)

    shot = tmp_path / "report.png"
    result = headless("--window-size=1200,1600", f"--screenshot={shot}", out.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    colourful = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 0.15
    assert colourful.mean() > 0.02, "the screenshot shows no coloured plot"


def test_report_command(run_dir: tuple[Path, pa.Table], tmp_path: Path) -> None:
    import json
    import sys

    root, table = run_dir
    out = tmp_path / "r.html"
    proc = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "report", str(root), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["verdicts"] == table.num_rows
    bad = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "report", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "no verdict dataset" in bad.stderr


def _alert(incident: str, host: str, kind: str, revision: int, status: str, first_s: float,
           last_s: float, packets: int) -> dict[str, object]:  # fmt: skip
    """One ``amlhp.alert`` row as the alerts stage emits it (times after START_NS)."""
    return {
        "gateway": "gw-1", "ts_ns": START_NS + int(last_s * 1e9), "incident_id": incident,
        "revision": revision, "status": status, "reason": "threshold", "host": host,
        "role": "source", "kind": kind, "severity": "medium", "confidence": 0.8,
        "score": 1.6, "techniques": ["T1046"],
        "evidence": [{"detector": "scan_fanout", "scale": "minutes", "kind": kind,
                      "strength": 1.6, "facts": "ports=40"}],
        "first_seen_ns": START_NS + int(first_s * 1e9),
        "last_seen_ns": START_NS + int(last_s * 1e9), "opened_ns": START_NS + int(first_s * 1e9),
        "packets": packets, "mean_score": 0.97, "classes": ["scan_tcp_syn"],
        "class_packets": [packets], "top_peers": ["10.0.0.9"], "top_peer_packets": [packets],
        "top_ports": [22, 80], "top_port_packets": [packets - 1, 1], "distinct_peers": 1,
        "distinct_ports": 2, "sample_seqs": [11, 12], "explanation_seq": None,
        "model_version": "m1", "emitted_at_ns": START_NS + int(last_s * 1e9),
    }  # fmt: skip


def test_incidents_section_shows_the_latest_revision_in_range(
    run_dir: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    from amlhp.alerts.engine import alert_batch
    from amlhp.dashboards.report_incidents import incident_section

    rows = [
        _alert("a", "192.0.2.7", "scan", 0, "opened", 5, 10, 40),
        _alert("a", "192.0.2.7", "scan", 1, "closed", 5, 25, 90),
        _alert("b", "192.0.2.8", "brute_force", 0, "opened", 70, 80, 30),
    ]
    table = pa.Table.from_batches([alert_batch(rows)])
    section = incident_section(table, tmp_path)
    assert [(i["incident_id"], i["status"], i["packets"]) for i in section.incidents] == [
        ("a", "closed", 90),
        ("b", "opened", 30),
    ]
    assert section.summary() == "2: brute_force (1), scan (1); 1 still open"
    later = incident_section(table, tmp_path, since_ns=START_NS + int(30e9))
    assert [i["incident_id"] for i in later.incidents] == ["b"]
    earlier = incident_section(table, tmp_path, until_ns=START_NS + int(30e9))
    assert [i["incident_id"] for i in earlier.incidents] == ["a"]

    root, _ = run_dir
    write_dataset(table, root.parent / "alerts", topic="amlhp.alerts")
    out = tmp_path / "report.html"
    summary = write_report(root, out)  # the sibling alerts/ folder is found
    page = out.read_text()
    assert summary["incidents"] == 2
    assert '<h2 id="incidents">' in page
    assert page.count("<td>192.0.2.7</td>") == 1
    assert "<td>192.0.2.8</td>" in page
    assert "<td>90</td>" in page
    assert "<td>40</td>" not in page
    assert "2: brute_force (1), scan (1); 1 still open" in page
    since = datetime.fromtimestamp(START_NS / 1e9 + 60, UTC)
    assert write_report(root, out, since=since, alerts=root.parent / "alerts")["incidents"] == 1
    with pytest.raises(DashboardsError, match="no alert dataset"):
        write_report(root, out, alerts=tmp_path / "missing")
