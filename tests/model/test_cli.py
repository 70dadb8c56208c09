"""The commands end to end: train, model info, evaluate, score, and the one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from amlhp.cli import build_app
from amlhp.model.artifact import Artifact

runner = CliRunner()


def _amlhp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_labels: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "model"
    result = runner.invoke(
        build_app(),
        [
            "train",
            "--labels",
            str(synthetic_labels),
            "--split",
            "flow",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--threads",
            "1",
            "--out",
            str(out),
            "--json",
            "--report-dir",
            str(out.parent / "report"),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy"] >= 0.9
    assert summary["params"] <= 25_000
    assert (out.parent / "report" / "confusion.png").is_file()
    return out


def test_model_info_json(trained: Path) -> None:
    result = runner.invoke(build_app(), ["model", "info", str(trained), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("params", "flops", "classes", "version", "sha256"):
        assert key in info
    assert info["classes"] == ["mqtt_connect", "syn_flood", "dns_response", "tls_client"]
    assert info["command"].startswith("amlhp ")


def test_evaluate_the_held_out_side(trained: Path, synthetic_labels: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        build_app(),
        [
            "evaluate",
            str(trained),
            "--labels",
            str(synthetic_labels),
            "--out-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    stored = json.loads(trained.with_suffix(".json").read_text())["metrics"]
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-4)
    assert len(metrics["confusion"]) == 4
    assert (tmp_path / "confusion.csv").read_text().startswith("true\\predicted,mqtt_connect")


def test_score_writes_one_row_per_packet(
    trained: Path, synthetic_labels: Path, tmp_path: Path
) -> None:
    capture = synthetic_labels.parent / "dns_response.pcap"
    out = tmp_path / "v.parquet"
    result = runner.invoke(
        build_app(), ["score", str(capture), "--model", str(trained), "--out", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(out)
    assert table.num_rows == 200
    assert {"status", "label", "score"} <= set(table.column_names)
    labels = table.column("label").to_pylist()
    assert labels.count("dns_response") >= 180


def test_tampered_artifact_is_one_line_error(trained: Path, tmp_path: Path) -> None:
    for suffix in (".json", ".safetensors"):
        (tmp_path / f"m{suffix}").write_bytes(trained.with_suffix(suffix).read_bytes())
    meta = json.loads((tmp_path / "m.json").read_text())
    meta["payload_bytes"] = 128
    (tmp_path / "m.json").write_text(json.dumps(meta))
    proc = _amlhp("model", "info", str(tmp_path / "m"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert proc.stderr.startswith("error: ")
    assert "tampered" in proc.stderr


def test_default_model_info(tiny_artifact: Artifact) -> None:
    del tiny_artifact
    proc = _amlhp("model", "info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["params"] <= 25_000
    assert len(info["classes"]) == 30  # the lab's second round + every public source


def test_score_on_a_small_capture_stays_light_without_torch(tmp_path: Path) -> None:
    """``amlhp score`` served by the native kernel never imports torch (about 700 MB): the
    command itself, in a child process, reports its peak memory and its modules."""
    if not Path("/proc/self/status").exists():
        pytest.skip("peak memory is read from /proc (Linux)")
    import json
    import subprocess
    import sys

    import dpkt

    from amlhp.data import DEMO_CAPTURE

    small = tmp_path / "small.pcap"
    with DEMO_CAPTURE.open("rb") as fh, small.open("wb") as out:
        reader = dpkt.pcap.Reader(fh)
        writer = dpkt.pcap.Writer(out, linktype=reader.datalink())
        for _, (ts, frame) in zip(range(11), reader, strict=False):
            writer.writepkt(frame, ts)
    # VmHWM, not getrusage: ru_maxrss survives exec, so a child of this (torch-laden)
    # pytest process would report the parent's peak
    code = (
        "import json, sys\n"
        f"sys.argv = ['amlhp', 'score', {str(small)!r}, '--out', {str(tmp_path / 'v')!r}]\n"
        "from amlhp.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
        "print(json.dumps({'rss_kb': int(hwm.split()[1]), 'torch': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["torch"] is False
    assert got["rss_kb"] < 300 * 1024, got


def test_score_counts_what_it_did_not_score_and_fails_on_nothing(tmp_path: Path) -> None:
    """The bundled public mix holds ARP frames (counted by reason) and IPv6 packets
    (scored); a folder without captures is a warning and exit 1, not an empty success."""
    from amlhp.data import BENCH_CAPTURE

    proc = _amlhp("score", str(BENCH_CAPTURE), "--out", str(tmp_path / "v.parquet"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert sum(summary["not_scored"].values()) == summary["packets"] - summary["scored"]
    assert summary["not_scored"]["arp"] > 0
    text = _amlhp("score", str(BENCH_CAPTURE), "--out", str(tmp_path / "w.parquet"))
    assert f"arp {summary['not_scored']['arp']}" in text.stdout
    verdicts = pq.read_table(tmp_path / "v.parquet", columns=["src_ip"]).column("src_ip")
    assert any(":" in ip for ip in verdicts.to_pylist() if ip), "no IPv6 packet was scored"
    (tmp_path / "empty").mkdir()
    nothing = _amlhp("score", str(tmp_path / "empty"), "--out", str(tmp_path / "e.parquet"))
    assert nothing.returncode == 1
    assert "warning: no packet in" in nothing.stderr


def test_score_reads_stdin_and_writes_parquet_to_stdout(tmp_path: Path) -> None:
    """``cat x.pcap | amlhp score - --out -``: Parquet on stdout, the summary on stderr."""
    import io

    from amlhp.data import DEMO_CAPTURE

    head = DEMO_CAPTURE.read_bytes()[:200_000]  # a truncated last record is counted, not fatal
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", "score", "-", "--out", "-"],
        input=head, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    table = pq.read_table(io.BytesIO(done.stdout))
    assert table.num_rows > 100
    assert b"scored " in done.stderr
