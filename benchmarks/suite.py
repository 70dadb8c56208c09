"""``amlhp bench all`` / ``make bench``: every benchmark once, results and plots in one folder.

Order matters on a small machine: the stage figures and every scorer backend first
(nothing else running), then the end-to-end loads, the replay (beside the live rate just
measured), then scale-out.
Each writes its JSON as soon as it is done, so an interrupted run keeps what it measured;
``results.md`` holds every table (:mod:`amlhp.benchmarks.report`) for the README.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from amlhp.benchmarks.e2e import E2EConfig, run_e2e
from amlhp.benchmarks.pipeline_run import StatusFn
from amlhp.benchmarks.pipeline_run import quiet as _quiet
from amlhp.benchmarks.plots import plot_e2e, plot_scaleout
from amlhp.benchmarks.replay_bench import replay_table, run_replay_bench
from amlhp.benchmarks.report import backends_table, e2e_table, scaleout_table, stages_table
from amlhp.benchmarks.results import write_json
from amlhp.benchmarks.scaleout import run_scaleout
from amlhp.benchmarks.score_bench import compare_backends
from amlhp.benchmarks.stages import run_stages
from amlhp.settings import Settings


def run_all(
    settings: Settings,
    out_dir: Path,
    *,
    work_dir: Path = Path("out/bench"),
    quick: bool = False,
    seconds_per_rate: float = 60.0,
    on_status: StatusFn = _quiet,
) -> dict[str, Any]:
    """Stages, end to end and scale-out; returns {name: path written}."""
    started = time.time()
    written: dict[str, Any] = {}
    on_status("== stages")
    stages = run_stages(
        settings, out_dir=out_dir, work_dir=work_dir, quick=quick, on_status=on_status
    )
    written["stages"] = str(write_json(stages, out_dir / "stages.json"))
    written["fig10"] = str(out_dir / "fig10.json")
    on_status("== scorer backends")
    backends = compare_backends(repeat=2 if quick else 3, min_packets=5000 if quick else 20_000)
    written["backends"] = str(write_json(backends, out_dir / "score_backends.json"))
    on_status("== end to end")
    cfg = E2EConfig.quick_config() if quick else E2EConfig(seconds_per_rate=seconds_per_rate)
    e2e = run_e2e(settings, cfg, work_dir=work_dir, on_status=on_status)
    written["e2e"] = str(write_json(e2e, out_dir / "e2e.json"))
    written["e2e_plots"] = [str(p) for p in plot_e2e(e2e, out_dir)]
    on_status("== replay")
    replay = run_replay_bench(settings, work_dir=work_dir, results_dir=out_dir,
                              on_status=on_status)  # fmt: skip
    written["replay"] = str(write_json(replay, out_dir / "replay.json"))
    on_status("== scale-out")
    scale = run_scaleout(
        settings,
        capacity_loops=1 if quick else 3,
        work_dir=work_dir,
        quick=quick,
        on_status=on_status,
    )
    written["scaleout"] = str(write_json(scale, out_dir / "scaleout.json"))
    written["scaleout_plot"] = str(plot_scaleout(scale, out_dir / "scaleout.png"))
    tables = [
        "## Stages\n",
        stages_table(stages),
        "\n## Scorer backends\n",
        backends_table(backends),
        "\n## End to end\n",
        e2e_table(e2e),
        "\n## Replay\n",
        replay_table(replay),
        "\n## Scale-out\n",
        scaleout_table(scale),
        "",
    ]
    (out_dir / "results.md").write_text("\n".join(tables))
    written["tables"] = str(out_dir / "results.md")
    written["elapsed_s"] = round(time.time() - started, 1)
    return written
