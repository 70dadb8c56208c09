"""``amlhp bench adapt``: what learning a site costs, to learn and to serve.

* **Learning.** One hour of one gateway's traffic at the demo capture's own rate (its
  packets over its capture time, about 148 packets/s): the capture is tapped into topics
  of the benchmark's own as often as that takes (sequence numbers running on, capture
  times kept), then the real ``amlhp model adapt --from --to`` command reads the window
  back, scores it, runs the alert engine over it, guards and writes the profile. Its wall
  time, model load and planning included. ``--force``: the demo capture holds attacks,
  which the rails would refuse, and the benchmark times the whole work.
* **Serving.** The worker's work on a micro-batch (encode, score, and for an adapted
  gateway the site judgement), on the demo capture in batches of 1,024 packets, on one
  thread: packets/s with the base model alone and with a site profile judging every
  packet's gateway. Best of ``repeat`` rounds each, interleaved.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from amlhp.benchmarks.machine import machine_facts
from amlhp.benchmarks.pipeline_run import StatusFn, bench_settings, new_run_id, quiet
from amlhp.benchmarks.replay_bench import WINDOW, amlhp_json
from amlhp.data import DEMO_CAPTURE
from amlhp.pipeline.children import child_env
from amlhp.settings import Settings

GATEWAY = "bench-site"
#: the goals of issue 34: minutes to learn one hour, share of the worker's capacity
GOAL_LEARN_S = 300.0
GOAL_SERVE_COST = 0.10


def capture_rate(capture: Path) -> tuple[int, float]:
    """Packets of the capture and its own rate (packets over capture time)."""
    from amlhp.encoders.readers import iter_packets

    times = [p.ts_ns for p in iter_packets(capture)]
    span_s = (max(times) - min(times)) / 1e9
    return len(times), len(times) / span_s


def serving_cost(repeat: int = 3) -> dict[str, Any]:
    """Packets/s of encode + score (+ site judgement) per 1,024-packet batch, one thread."""
    import pyarrow as pa

    from amlhp.encoders.arrays import model_inputs
    from amlhp.encoders.capture import iter_encoded
    from amlhp.encoders.readers import iter_raw_batches
    from amlhp.model.decision import DECISIONS
    from amlhp.model.scorer import load_scorer
    from amlhp.model.site import KindMemory, SiteProfile, SiteProfiles
    from amlhp.model.site_kinds import packet_kinds
    from amlhp.streams.deadletter import Origin
    from amlhp.streams.processing import encode_raw, score_batches

    raws = list(iter_raw_batches(DEMO_CAPTURE, GATEWAY, 1024))
    origin = [Origin("bench", 0, 0)]
    base = load_scorer()
    adapted = load_scorer()
    table = pa.Table.from_batches(list(iter_encoded([DEMO_CAPTURE], base.encoder_config)))
    header, payload, ok = model_inputs(table)
    a = base.assess(header[ok], payload[ok])
    memory = KindMemory.learn(packet_kinds(header[ok], payload[ok]), a.malicious_score, a.class_ids)
    adapted.sites = SiteProfiles({GATEWAY: SiteProfile(memory, (GATEWAY,), base.version)})
    config = base.encoder_config
    packets = sum(r.num_rows for r in raws)
    best: dict[str, float] = {"base": 0.0, "site": 0.0}
    decided: dict[str, dict[str, int]] = {}
    for _ in range(repeat):
        for name, scorer in (("base", base), ("site", adapted)):
            counts = dict.fromkeys(DECISIONS, 0)
            started = time.perf_counter()
            for raw in raws:
                good = encode_raw(raw, origin, config).encoded
                if good is not None:
                    verdicts = score_batches([good], scorer, 1024)
                    for d in verdicts.column("decision").to_pylist():
                        counts[d] = counts.get(d, 0) + 1
            best[name] = max(best[name], packets / (time.perf_counter() - started))
            decided[name] = counts
    cost = 1 - best["site"] / best["base"]
    return {
        "packets": packets,
        "batch": 1024,
        "kinds_in_profile": len(memory),
        "base_packets_per_second": round(best["base"], 1),
        "site_packets_per_second": round(best["site"], 1),
        "cost": round(float(cost), 4),
        "decisions": decided,
        "rounds": repeat,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None,
        "ok_rows": int(np.count_nonzero(ok)),
    }


def learning_time(settings: Settings, *, on_status: StatusFn = quiet) -> dict[str, Any]:
    """One hour of one gateway at the demo capture's rate, tapped, then adapted from."""
    from confluent_kafka.admin import AdminClient

    from amlhp.streams.topics import delete_topics, ensure_pipeline_topics

    packets, rate = capture_rate(DEMO_CAPTURE)
    copies = math.ceil(rate * 3600 / packets)
    bench = bench_settings(settings, new_run_id(), 4)
    ensure_pipeline_topics(bench)
    env = child_env(bench, {**os.environ, "OMP_NUM_THREADS": "2"})
    try:
        for i in range(copies):
            on_status(f"adapt bench: tap {i + 1}/{copies}")
            amlhp_json(env, "tap", str(DEMO_CAPTURE), "--gateway", GATEWAY, "--keep-timestamps",
                   "--start-seq", str(i * packets))  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="amlhp-adapt-bench-") as tmp:
            on_status("adapt bench: amlhp model adapt")
            started = time.perf_counter()
            doc = amlhp_json(
                env, "model", "adapt", "--gateway", GATEWAY, *WINDOW, "--force",
                "--sites", f"{tmp}/sites", "--work", f"{tmp}/window", "--json",
            )  # fmt: skip
            wall = time.perf_counter() - started
    finally:
        delete_topics(AdminClient(bench.kafka_config()), bench.topics.all())
    return {
        "capture_rate_pps": round(rate, 1),
        "copies": copies,
        "packets": doc["window"]["packets"],
        "hour_packets_at_rate": round(rate * 3600),
        "wall_s": round(wall, 1),
        "window_packets_per_second": round(doc["window"]["packets"] / wall, 1),
        "kinds": doc["kinds"],
        "incidents_in_window": doc["window"]["incidents"],
    }


def run_adapt_bench(
    settings: Settings, *, repeat: int = 3, on_status: StatusFn = quiet
) -> dict[str, Any]:
    """Both measurements (module docstring); the learning one needs the broker."""
    on_status("adapt bench: serving cost")
    serving = serving_cost(repeat)
    learning = learning_time(settings, on_status=on_status)
    return {
        "kind": "adapt",
        "capture": DEMO_CAPTURE.name,
        "machine": machine_facts(),
        "learning": learning,
        "serving": serving,
        "goals": {
            "learn_one_hour_s": {
                "goal": GOAL_LEARN_S,
                "measured": learning["wall_s"],
                "met": learning["wall_s"] <= GOAL_LEARN_S,
            },
            "serving_cost": {
                "goal": GOAL_SERVE_COST,
                "measured": serving["cost"],
                "met": serving["cost"] <= GOAL_SERVE_COST,
            },
        },
    }


def adapt_table(doc: dict[str, Any]) -> str:
    """The benchmark as Markdown lines."""
    from amlhp.benchmarks.report import machine_line

    learn, serve = doc["learning"], doc["serving"]
    return "\n".join(
        [
            f"Learning one hour ({learn['packets']:,} packets, {learn['copies']} taps of the "
            f"demo capture at its {learn['capture_rate_pps']} packets/s): "
            f"{learn['wall_s']:.1f} s ({learn['window_packets_per_second']:,.0f} packets/s), "
            f"{learn['kinds']} kinds kept; goal at most {GOAL_LEARN_S:.0f} s.",
            f"Serving (encode + score per 1,024-packet batch, one thread): base "
            f"{serve['base_packets_per_second']:,.0f} packets/s, with a site profile on every "
            f"packet {serve['site_packets_per_second']:,.0f} packets/s: cost "
            f"{100 * serve['cost']:.1f}% (goal at most {100 * GOAL_SERVE_COST:.0f}%).",
            machine_line(doc),
        ]
    )
