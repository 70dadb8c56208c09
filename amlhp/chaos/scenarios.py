"""The fault scenarios: what is done to which stage, when, in a run of ``Load.seconds``.

Times are fractions of the tap's run, so that the short version in ``make test`` and the
full one of ``amlhp chaos`` do the same thing. Each function returns once its last fault
is applied; :func:`amlhp.chaos.run.run_scenario` then checks the ledger.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from amlhp.chaos.run import ChaosRun


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    faults: Callable[[ChaosRun], None]
    workers: int = 1


def _kill_workers(run: ChaosRun) -> None:
    """SIGKILL the worker three times, each replaced at once."""
    for share in (0.2, 0.43, 0.66):
        run.at(share * run.load.seconds)
        run.signal(run.workers[0], signal.SIGKILL)
        killed = time.monotonic()
        run.start_worker()
        run.measure_recovery(killed)


def _rebalance(run: ChaosRun) -> None:
    """A second worker joins at a quarter of the run, the first leaves (SIGTERM) at half,
    a third joins at three quarters: three rebalances with traffic flowing."""
    run.at(0.25 * run.load.seconds)
    run.start_worker()
    run.at(0.5 * run.load.seconds)
    run.signal(run.workers[0], signal.SIGTERM)
    run.at(0.75 * run.load.seconds)
    run.start_worker()


def _zombie(run: ChaosRun) -> None:
    """SIGSTOP one of two workers past the session timeout (the group gives its partitions
    to the other), then SIGCONT it: it wakes up, finds itself out of the group, rejoins."""
    run.at(0.25 * run.load.seconds)
    zombie = run.workers[0]
    run.signal(zombie, signal.SIGSTOP)
    stopped = time.monotonic()
    run.measure_recovery(stopped)
    time.sleep(max(0.0, run.settings.session_timeout_s + 3 - (time.monotonic() - stopped)))
    run.signal(zombie, signal.SIGCONT)


def _kill_sink(run: ChaosRun) -> None:
    """SIGKILL the sink twice (its flushes run every 0.5 s: a kill lands mid-flush or just
    before one), restarted at once; files no manifest lists are removed on restart."""
    for share in (0.3, 0.6):
        run.at(share * run.load.seconds)
        assert run.sink is not None
        run.signal(run.sink, signal.SIGKILL)
        killed = time.monotonic()
        run.start_sink()
        run.measure_recovery(killed)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("worker-sigkill", "SIGKILL the worker 3 times, replaced at once", _kill_workers),
        Scenario("rebalance", "add, remove (SIGTERM) and add workers mid-run", _rebalance),
        Scenario(
            "zombie-worker",
            "SIGSTOP 1 of 2 workers past the session timeout, then SIGCONT",
            _zombie,
            workers=2,
        ),
        Scenario("sink-sigkill", "SIGKILL the sink twice mid-run, restarted at once", _kill_sink),
    )
}
