"""Learning a site on the real broker: ``amlhp model adapt`` from a window of the raw topic,
the worker hot-reloading the profile, the same gateway's later traffic judged by it while
another gateway keeps the base model, exact accounting, and ``amlhp replay-diff``."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from amlhp.encoders.capture import iter_encoded
from amlhp.model.offline import verdict_columns
from amlhp.model.scorer import load_scorer
from amlhp.pipeline.dataset import read_verdicts
from amlhp.settings import Settings
from amlhp.streams.demo import wait_accounted
from tests.support import synth
from tests.support.receivers import free_port

from .conftest import StageStarter
from .test_pipeline import ready
from .test_replay import amlhp, iso, tap

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

T0 = 1_760_000_000_000_000_000
STEP = 10_000_000  # 10 ms between packets


def site_traffic(n: int, start: int, clients: int = 6) -> list[synth.Record]:
    """A sensor hub's normal traffic the base model does not know: MQTT publishes (it
    calls them uncertain) and a legacy telnet console (mostly malicious)."""
    out = []
    for i in range(n):
        sport = 40000 + i % clients
        if i % 4 == 3:
            body, dport = b"\xff\xfb\x01" + b"x" * (i % 16), 23
        else:
            body, dport = b"\x30\x14\x00\x05t/abc" + b"v" * 13, 1883
        packet = synth.ipv4(synth.tcp(body, sport=sport, dport=dport, seq=i), 6, src="10.9.0.2")
        out.append(synth.Record(synth.ethernet(packet), start + i * STEP))
    return out


def sweep(n: int, start: int) -> list[synth.Record]:
    """An attack the window never held: a SYN sweep of n ports."""
    return [
        synth.Record(
            synth.ethernet(
                synth.ipv4(
                    synth.tcp(flags=0x02, sport=61000, dport=1 + i, window=1024), 6, src="10.9.0.66"
                )
            ),
            start + i * STEP,
        )
        for i in range(n)
    ]


def served_profiles(port: int) -> set[str]:
    """Gateways the worker's metrics say a learnt site judges."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return set()
    lines = [x for x in text.decode().splitlines() if x.startswith("amlhp_site_profile_info{")]
    return {x.split('gateway="')[1].split('"')[0] for x in lines if x.endswith(" 1.0")}


def offline(capture: Path, gateway: str, sites: Path | None) -> pa.Table:
    """What ``amlhp score`` says of each packet of the capture as this gateway's."""
    scorer = load_scorer(sites=sites)
    batches = [
        verdict_columns(b, scorer) for b in iter_encoded([capture], scorer.encoder_config, gateway)
    ]
    return pa.Table.from_batches(batches).sort_by("seq")


def test_adapt_from_a_topic_window_then_hot_reload_per_gateway(
    pipeline_settings: Settings, stages: StageStarter, tmp_path: Path
) -> None:
    settings = pipeline_settings
    sites = tmp_path / "sites"
    sites.mkdir()
    port = free_port()
    out = tmp_path / "verdicts"
    worker = stages("worker", "worker", "--sites", str(sites), "--metrics-port", str(port))
    sink = stages("sink", "sink", "--out", str(out), "--roll-seconds", "1")
    ready(settings, [worker, sink])

    window = synth.write_pcap(tmp_path / "window.pcap", site_traffic(400, T0))
    later_start = T0 + 600 * STEP
    later = synth.write_pcap(
        tmp_path / "later.pcap", site_traffic(200, later_start) + sweep(60, later_start + 10**9)
    )
    for gateway in ("gw-site", "gw-other"):
        tap(settings, window, gateway)
    counts = {"gw-site": (0, 400), "gw-other": (0, 400)}
    ledger = wait_accounted(settings, out, counts, [worker, sink], timeout_s=240)
    assert ledger.complete, ledger.as_dict()

    adapt = [
        "model", "adapt", "--gateway", "gw-site", "--from", iso(T0),
        "--to", iso(T0 + 400 * STEP), "--sites", str(sites), "--work", str(tmp_path / "win"),
    ]  # fmt: skip
    done = amlhp(settings, *adapt, "--json")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gateways"] == ["gw-site"]
    assert result["window"]["packets"] == 400
    assert result["window"]["gateways_seen"] == ["gw-site"]  # the other gateway left out
    assert result["window"]["incidents"] == 0
    assert result["guard"]["worst_drop"] <= 0.02
    version = result["version"]
    profile = json.loads((sites / "gw-site.json").read_text())
    assert profile["adapted_on"]["kind"] == "topic"
    assert profile["adapted_on"]["base_model"]["version"] in version
    assert profile["fingerprint"].startswith("sha256:")

    deadline = time.monotonic() + 60
    while "gw-site" not in served_profiles(port):
        worker.check_alive()
        assert time.monotonic() < deadline, "the worker never served the new profile"
        time.sleep(0.5)

    for gateway in ("gw-site", "gw-other"):
        tap(settings, later, gateway, "--start-seq", "400")
    counts = {"gw-site": (0, 660), "gw-other": (0, 660)}
    ledger = wait_accounted(settings, out, counts, [worker, sink], timeout_s=240)
    assert ledger.complete, ledger.as_dict()
    assert ledger.duplicate_verdicts == 0
    assert ledger.both == 0
    assert ledger.verdicts + ledger.dead_packets == ledger.packets_in == 1320

    table = read_verdicts(out)
    base = offline(later, "gw-other", None)
    adapted = offline(later, "gw-site", sites)
    for gateway, expected in (("gw-other", base), ("gw-site", adapted)):
        rows = table.filter(pc.equal(table.column("gateway"), gateway)).sort_by("seq")
        rows = rows.filter(pc.greater_equal(rows.column("seq"), 400))
        assert rows.column("decision").to_pylist() == expected.column("decision").to_pylist()
        assert rows.column("label").to_pylist() == expected.column("label").to_pylist()
        versions = set(rows.column("model_version").to_pylist())
        assert versions == (
            {version} if gateway == "gw-site" else {result["version"].split("+")[0]}
        )
    site_part = adapted.slice(0, 200).column("decision").to_pylist()
    assert set(site_part) == {"benign"}, "the site's own kinds are its normal"
    base_part = base.slice(0, 200).column("decision").to_pylist()
    assert set(base_part) - {"benign"}, "the base model flags the site's traffic"
    sweep_base = base.slice(200, 60).column("decision").to_pylist()
    assert adapted.slice(200, 60).column("decision").to_pylist() == sweep_base
    window_rows = table.filter(pc.equal(table.column("gateway"), "gw-site"))
    window_rows = window_rows.filter(pc.less(window_rows.column("seq"), 400))
    assert "+site" not in "".join(window_rows.column("model_version").to_pylist())

    # what adapting changes on the window: its base replay (kept by adapt) against a
    # replay with the learnt site
    again = tmp_path / "again"
    amlhp(settings, "replay", "--from", iso(T0), "--to", iso(T0 + 400 * STEP),
          "--gateway", "gw-site", "--sites", str(sites), "--out", str(again), "--json")  # fmt: skip
    diff = json.loads(amlhp(settings, "replay-diff", str(tmp_path / "win"), str(again),
                            "--json").stdout)  # fmt: skip
    assert diff["common"] == 400
    changed = diff["decisions"]
    assert sum(n for d, n in changed.get("benign", {}).items() if d != "benign") == 0
    assert sum(changed.get(d, {}).get("benign", 0) for d in ("malicious", "uncertain")) > 0
