"""``amlhp flows build | train | evaluate | explain | score`` on small hand-built captures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.synth import Record, write_pcap

from .conftest import T0, tcp_frame

CLASSES = 3
FILES = 3
FLOWS_PER_FILE = 4


def amlhp(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "amlhp.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(doc, dict)
    return doc


def captures(root: Path) -> Path:
    """FILES captures per device class, each with FLOWS_PER_FILE 3-packet flows."""
    for k in range(CLASSES):
        folder = root / f"device{k}"
        folder.mkdir(parents=True)
        for f in range(FILES):
            records = []
            for flow in range(FLOWS_PER_FILE):
                for p in range(3):
                    frame = tcp_frame(
                        bytes([65 + k]) * (10 * (k + 1)),
                        out=p != 1,
                        device=f"192.168.1.{10 + k}",
                        remote=f"52.0.{k}.{flow}",
                        rport=1000 + 100 * k + flow,
                    )
                    ts = T0 + f * 10**12 + flow * 2 * 10**9 + p * 10**7
                    records.append(Record(frame, ts_ns=ts))
            write_pcap(folder / f"setup-{f}.pcap", records)
    return root


@pytest.mark.slow
def test_build_train_evaluate_explain_score(tmp_path: Path) -> None:
    data = captures(tmp_path / "caps")
    ds = tmp_path / "flows.npz"
    built = amlhp("flows", "build", str(data), "--by-folder", "--main-device-only", "-o", str(ds))
    assert built["flows"] == CLASSES * FILES * FLOWS_PER_FILE
    assert built["per_class"] == {f"device{k}": FILES * FLOWS_PER_FILE for k in range(CLASSES)}
    model = tmp_path / "model"
    trained = amlhp(
        "flows", "train", "--data", str(ds), "-o", str(model), "--epochs", "2", "--threads", "1"
    )
    assert isinstance(trained["parameters"], int)
    assert trained["parameters"] > 10_000
    assert (model / "flow_model.safetensors").is_file()
    out = tmp_path / "eval"
    figures = amlhp("flows", "evaluate", "--data", str(ds), "--model", str(model), "-o", str(out))
    assert figures["flows"] == FLOWS_PER_FILE * CLASSES  # one test file per class
    results = json.loads((out / "results.json").read_text())
    assert [s["strategy"] for s in results["strategies"]] == [
        "per_flow",
        "sliding_window",
        "device_window",
    ]
    statuses = results["refinement_statuses"]
    assert sum(statuses.values()) == figures["flows"]
    assert (out / "confusion_after.png").stat().st_size > 1000
    png = tmp_path / "verdict.png"
    doc = amlhp(
        "flows", "explain", "--data", str(ds), "--model", str(model), "--png", str(png), "--captum"
    )
    assert png.stat().st_size > 1000
    for group, value in doc["attributions"].items():  # type: ignore[attr-defined]
        assert abs(value - doc["attributions_captum"][group]) < 1e-5  # type: ignore[index]
    scored = amlhp(
        "flows",
        "score",
        str(data),
        "--model",
        str(model),
        "-o",
        str(tmp_path / "v.parquet"),
        "--explain",
    )
    assert scored["flows"] == CLASSES * FILES * FLOWS_PER_FILE
    table = pq.read_table(tmp_path / "v.parquet")
    assert table.column("attributions").null_count == 0
    assert set(table.column("packets").to_pylist()) == {3}
    # flows after the first of their capture have context rows
    assert max(table.column("context_flows").to_pylist()) == FLOWS_PER_FILE - 1
