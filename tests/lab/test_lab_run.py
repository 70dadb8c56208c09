"""A short real lab run (every scenario, a few hundred packets each) and what it must hold."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from amlhp.encoders.readers import iter_packets
from amlhp.lab.exceptions import LabBusyError
from amlhp.lab.procs import exclusive_lab
from amlhp.lab.scenarios import SCENARIOS
from amlhp.lab.verify import verify_run
from tests.support.lab import reaped, require_lab

from .conftest import default_sigint

pytestmark = [pytest.mark.slow, pytest.mark.live]

Run = tuple[Path, Path, dict[str, Any]]


#: every lab process names its work dir or a lab address on its command line
LAB_NEEDLES = ("127.10.0.", "127.20.0.", "127.66.0.")


def processes_mentioning(*needles: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(needle in cmdline for needle in needles):
            found.append(int(entry.name))
    return found


def test_each_scenario_produced_packets_of_its_class(ci_lab_run: Run) -> None:
    out, _, manifest = ci_lab_run
    assert [e["scenario"] for e in manifest["files"]] == [s.name for s in SCENARIOS]
    for entry in manifest["files"]:
        assert entry["classes"].get(entry["label"], 0) > 0, entry
        assert (out / entry["file"]).stat().st_size == entry["bytes"]
    assert set(manifest["classes"]) == {s.label for s in SCENARIOS}
    assert len(manifest["classes"]) >= 10
    assert manifest["total_packets"] == sum(manifest["classes"].values())


def test_labels_match_the_address_rules(ci_lab_run: Run) -> None:
    out, _, _ = ci_lab_run
    report = verify_run(out)  # re-labels every packet from labels.yaml, role by role
    assert report.ok, "\n".join(report.lines())
    for file_report in report.files:
        assert file_report.counts[file_report.label] > 0


def test_the_pipelines_reader_sees_the_same_packets(ci_lab_run: Run) -> None:
    out, _, manifest = ci_lab_run
    for entry in manifest["files"]:
        packets = list(iter_packets(out / entry["file"]))
        assert len(packets) == entry["packets"]
        assert Counter(p.linktype for p in packets) == Counter({1: entry["packets"]})


def test_no_lab_process_is_left_after_the_run(ci_lab_run: Run) -> None:
    _, workdir, _ = ci_lab_run
    assert (workdir / "processes.json").read_text().strip() == "[]"
    assert processes_mentioning(str(workdir), *LAB_NEEDLES) == []


def test_ctrl_c_during_a_run_stops_everything(lab_workdir: Path, tmp_path: Path) -> None:
    require_lab()
    try:
        with exclusive_lab():
            pass
    except LabBusyError as exc:
        pytest.skip(f"another lab run is in progress: {exc}")
    registry = lab_workdir / "processes.json"
    registry.unlink(missing_ok=True)
    amlhp = Path(sys.executable).with_name("amlhp")
    proc = subprocess.Popen(
        [str(amlhp), "lab", "run", "-o", str(tmp_path), "--workdir", str(lab_workdir),
         "-s", "benign", "--benign-packets", "1000000", "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=default_sigint,
    )  # fmt: skip
    with reaped(proc):
        deadline = time.monotonic() + 60
        while "tcpdump" not in (registry.read_text() if registry.exists() else ""):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the lab did not start capturing"
            time.sleep(0.2)
        assert len(processes_mentioning(*LAB_NEEDLES)) >= 10  # servers, sensors, tcpdump
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "Ctrl-C" in err
    assert processes_mentioning(str(lab_workdir), *LAB_NEEDLES) == []
    assert registry.read_text().strip() == "[]"


def test_the_models_labels_loader_agrees_with_the_lab(ci_lab_run: Run) -> None:
    """Training reads labels.yaml with the model's own loader: same class for every packet."""
    from amlhp.encoders.capture import encode_captures
    from amlhp.model.labels import assign_labels, load_labels

    out, _, manifest = ci_lab_run
    spec = load_labels(out / "labels.yaml")
    assert spec.classes[0] == "benign"
    assert set(spec.classes) == set(manifest["classes"])
    for entry in manifest["files"]:
        path = (out / entry["file"]).resolve()
        table = encode_captures([path])
        ids = assign_labels(table, spec.files[path])
        assert (ids >= 0).all(), f"{entry['file']}: packets no class claims"
        counts = Counter(spec.classes[i] for i in ids.tolist())
        assert dict(sorted(counts.items())) == entry["classes"], entry["file"]
