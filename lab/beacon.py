"""A polling implant: HTTP beacons to the C2 with ``curl``, base64 tasks and results.

``python -m amlhp.lab.beacon`` runs ``curl`` from the compromised device's address once per
beacon: a GET of the task (JSON ``{"t": base64, "s": sleep}``), then, when there is one,
a POST of a base64 "result" (canned text: nothing is executed), then a jittered sleep.
This is the low-and-slow shape of commodity HTTP C2 traffic: small periodic requests to
one host, a fixed URL pattern and a user agent that never changes.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import subprocess
import sys
import time

from amlhp.lab.drivers import c2_parser, run_driver
from amlhp.lab.safety import check_argv, loopback_address

USER_AGENT = "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)"


def _curl(argv: list[str], timeout_s: float) -> str:
    check_argv(argv)
    out = subprocess.run(argv, capture_output=True, timeout=timeout_s, check=False)
    return out.stdout.decode(errors="replace") if out.returncode == 0 else ""


def run(args: argparse.Namespace) -> int:
    server = loopback_address(args.server)
    implant = loopback_address(args.implant)
    rng = random.Random(args.seed)
    base = f"http://{server}:{args.port}/api/v1"
    agent_id = f"{rng.getrandbits(32):08x}"
    common = ["curl", "-s", "--interface", str(implant), "-A", USER_AGENT, "--max-time", "5"]
    deadline = time.monotonic() + args.seconds
    done = 0
    while done < args.beacons and time.monotonic() < deadline:
        reply = _curl([*common, f"{base}/beacon?id={agent_id}&n={done}"], 10)
        done += 1
        try:
            task = base64.b64decode(json.loads(reply)["t"]).decode()
        except (ValueError, KeyError):
            task = ""
        if task:
            result = f"{task}: ok {rng.getrandbits(64):016x}\n" * rng.randint(1, 20)
            body = base64.b64encode(result.encode()).decode()
            _curl([*common, "-X", "POST", "--data", f"id={agent_id}&r={body}",
                   f"{base}/result"], 10)  # fmt: skip
        time.sleep(args.interval * rng.uniform(0.7, 1.3))
    print(f"{done} beacons")
    return 0 if done else 1


def main(argv: list[str] | None = None) -> int:
    pace = ("--interval", 1.0, "mean seconds between beacons")
    p = c2_parser(__doc__, 60.0, "server", 8081, ("--beacons", 20), pace)
    return run_driver(p, run, argv)


if __name__ == "__main__":
    sys.exit(main())
