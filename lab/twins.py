"""The same attacks over IPv4 and over IPv6: twin runs that tell how the model judges an
IPv6 packet beside its IPv4 twin (issue "The whole frame", goal "IPv6 quality").

The lab's main scenarios run on loopback, which has a single IPv6 address (``::1``), so
their twins run on the namespaced LAN of :mod:`amlhp.lab.netns_lan` instead. The router
serves SSH (Debian's sshd) and HTTP (Python's ``http.server``) on both families; the camera
fetches a page and pings the router over both, throughout (the benign traffic). The
attacker then runs each attack twice, first at the router's IPv4 address and then at its
IPv6 address, with the same tool and the same settings (tools that speak both: ``nmap``,
``hydra``, ``nping``; hping3, which the loopback lab floods with, has no IPv6):

- ``tcp_portscan``: ``nmap -sS`` over 1,000 ports;
- ``ssh_bruteforce``: ``hydra`` guessing SSH logins, 4 at a time;
- ``dos_synflood`` and ``dos_udpflood``: ``nping`` at 1,000 packets/s.

The manifest records each run's family, class and time window; :mod:`amlhp.lab.twins_quality`
labels the capture from it (a packet to or from the attacker inside a window has that
window's class, the camera's are benign) and compares the families. tcpdump on the bridge
records every frame; the namespaces are removed at the end, even when the run fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from amlhp.lab.exceptions import LabError
from amlhp.lab.netns_lan import (
    ATTACKER,
    BRIDGE,
    CAMERA,
    LAN,
    ROUTER,
    Host,
    capture_manifest,
    inside,
    lan,
)
from amlhp.lab.scenario import PASSWORDS, USERS
from amlhp.lab.services import SSH_ALLOWED_USER
from amlhp.lab.tools import tool_path

SSH_PORT, HTTP_PORT, UDP_PORT = 22, 80, 5683
#: an attack's command line: (target address, IPv6?, size, work folder) -> argv
Attack = Callable[[str, bool, int, Path], list[str]]


def _nmap(address: str, v6: bool, size: int, work: Path) -> list[str]:
    ports = f"1-{max(20, min(1000, size))}"
    return ["nmap", *(["-6"] if v6 else []), "-sS", "-n", "-T4", "-Pn", "-p", ports, address]


def _hydra(address: str, v6: bool, size: int, work: Path) -> list[str]:
    passwords = work / "passwords.txt"
    passwords.write_text("\n".join(PASSWORDS[: max(2, min(len(PASSWORDS), size))]) + "\n")
    return ["hydra", *(["-6"] if v6 else []), "-l", USERS[0], "-P", str(passwords), "-t", "4",
            "-w", "10", "-I", address, "ssh"]  # fmt: skip


def _nping(mode: list[str]) -> Attack:
    """nping from the attacker's own Ethernet frames (``--send-eth``): its raw IPv6 socket
    path cannot send UDP (``sendto ... Invalid argument``), so both families go this way."""

    def build(address: str, v6: bool, size: int, work: Path) -> list[str]:
        source = ATTACKER.address6 if v6 else ATTACKER.address
        return ["nping", *(["-6"] if v6 else []), "--send-eth", "-e", "eth0",
                "--source-mac", ATTACKER.mac, "--dest-mac", ROUTER.mac, "-S", source, *mode,
                "--rate", "1000", "-c", str(size), "-N", "-q", address]  # fmt: skip

    return build


ATTACKS: dict[str, tuple[Attack, int]] = {
    "tcp_portscan": (_nmap, 1000),
    "ssh_bruteforce": (_hydra, 24),
    "dos_synflood": (_nping(["--tcp", "--flags", "syn", "-p", str(HTTP_PORT)]), 3000),
    "dos_udpflood": (_nping(["--udp", "-p", str(UDP_PORT)]), 3000),
}


def _sshd_config(folder: Path) -> Path:
    """A password-only sshd on both families, for a user name that does not exist."""
    key = folder / "ssh_host_ed25519_key"
    subprocess.run([tool_path("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                   check=True, capture_output=True, timeout=30)  # fmt: skip
    Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
    conf = folder / "sshd_config"
    conf.write_text(
        f"ListenAddress {ROUTER.address}:{SSH_PORT}\nListenAddress [{ROUTER.address6}]:{SSH_PORT}\n"
        f"HostKey {key}\nPidFile none\nAllowUsers {SSH_ALLOWED_USER}\nPermitRootLogin no\n"
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nPubkeyAuthentication no\n"
        "UsePAM no\nMaxAuthTries 6\nMaxStartups 100:30:200\nLoginGraceTime 15\nUseDNS no\n"
    )
    conf.chmod(0o600)
    return conf


def _background(stack: ExitStack, host: Host | str, *argv: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(inside(host, *argv), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)

    stack.callback(stop)
    return proc


def _benign(stack: ExitStack, seconds: float) -> None:
    """The camera: a page over each family every second, and pings over each."""
    loop = (
        f"end=$((SECONDS+{int(seconds)})); while [ $SECONDS -lt $end ]; do "
        f"curl -s -o /dev/null -m 2 http://{ROUTER.address}:{HTTP_PORT}/; "
        f"curl -s -o /dev/null -m 2 -g 'http://[{ROUTER.address6}]:{HTTP_PORT}/'; "
        "sleep 1; done"
    )
    _background(stack, CAMERA, "sh", "-c", loop)
    for address in (ROUTER.address, ROUTER.address6):
        _background(stack, CAMERA, "ping", "-q", "-i", "0.5", "-w", str(int(seconds)), address)


def _wait_listening(address: str, ports: tuple[int, ...], timeout_s: float = 20.0) -> None:
    """Until the router accepts TCP connections on ``ports`` at ``address``, from the
    attacker (ncat's connect-only mode)."""
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            probe = inside(ATTACKER, "ncat", "-z", "-w", "1", address, str(port))
            if subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LabError(f"nothing listens on {address} port {port} in the router")
            time.sleep(0.2)


def _attack(argv: list[str]) -> None:
    """Run one attack from the attacker; once more after a pause if it fails, then a
    :class:`LabError` with the tool's last words. (In one of about ten short runs here,
    ``hydra -6`` said it could not connect to the router's sshd, which had answered the
    IPv4 run seconds before; the cause was not found, a second try connects.)"""
    for attempt in range(2):
        done = subprocess.run(inside(ATTACKER, *argv), capture_output=True, text=True,
                              timeout=300, check=False)  # fmt: skip
        if done.returncode == 0:
            return
        if attempt == 0:
            time.sleep(2.0)
    raise LabError(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")


def run_twins(out: Path, *, scale: float = 1.0) -> dict[str, Any]:
    """Record the twin runs (module docstring) into ``out``/twins.pcap; returns the manifest
    (also ``out``/manifest.json). ``scale`` shrinks every attack (0.1 for a test run)."""
    for program in ("tcpdump", "nmap", "nping", "hydra", "sshd", "ssh-keygen", "curl", "ping",
                    "ncat"):  # fmt: skip
        tool_path(program)  # a clear error naming the package when one is missing
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "twins.pcap"
    sizes = {name: max(2, round(size * scale)) for name, (_, size) in ATTACKS.items()}
    windows: list[dict[str, Any]] = []
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="amlhp-twins-"))
    try:
        with lan(), ExitStack() as stack:
            _background(stack, LAN, "tcpdump", "-i", BRIDGE, "-U", "-n", "-w", str(pcap))
            sshd = shutil.which("sshd") or "/usr/sbin/sshd"
            _background(stack, ROUTER, sshd, "-D", "-e", "-f", str(_sshd_config(work)))
            (work / "www").mkdir()
            (work / "www" / "index.html").write_text("<!doctype html><title>router</title>\n")
            _background(stack, ROUTER, sys.executable, "-m", "http.server", str(HTTP_PORT),
                        "--bind", "::", "--directory", str(work / "www"))  # fmt: skip
            for address in (ROUTER.address, ROUTER.address6):  # sshd and the web server
                _wait_listening(address, (SSH_PORT, HTTP_PORT))
            _benign(stack, seconds=3600)  # stopped with the stack
            time.sleep(2.0)
            for v6 in (False, True):
                address = ROUTER.address6 if v6 else ROUTER.address
                for name, (attack, _) in ATTACKS.items():
                    argv = attack(address, v6, sizes[name], work)
                    begin = time.time()
                    _attack(argv)
                    windows.append({"family": 6 if v6 else 4, "class": name,
                                    "start": begin, "end": time.time()})  # fmt: skip
                    time.sleep(1.5)  # the last replies, then a gap between windows
            time.sleep(1.5)  # the last frames reach tcpdump's socket before it stops
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = {
        **capture_manifest(pcap, started),
        "scale": scale,
        "attacker": [ATTACKER.address, ATTACKER.address6],
        "benign": [CAMERA.address, CAMERA.address6],
        "windows": windows,
        "tools": [
            "nmap -sS",
            "hydra ssh",
            "nping --tcp --flags syn",
            "nping --udp",
            "curl",
            "ping",
        ],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
