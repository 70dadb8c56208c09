"""Servers of the second round's attacks: telnetd, the attacker's FTP and HTTP servers, a C2.

* ``telnetd`` (inetutils) under inetutils' ``inetd``, both in the foreground with the lab's
  own config, on the telnet victim address only. Its login program is
  :data:`LOGIN_SCRIPT`, a shell script that prompts like a busybox device and refuses
  every password: the brute force gets real telnet negotiation and real "Login incorrect"
  answers, and no account of the machine can be logged into through the lab.
* The DNS tunnel's resolver: a second dnsmasq on the tunnel's resolver address, port 53
  (iodine cannot query another port), that forwards only the tunnel's domain to the
  attacker's name server (``iodined``, started per session by :mod:`amlhp.lab.dnstunnel`)
  from its own address, and refuses everything else.
* The attacker's infrastructure, on attacker addresses: ``vsftpd`` serving malware
  payloads (anonymous download, 127.66.0.16) and a second ``vsftpd`` as the exfiltration
  drop (anonymous upload, 127.66.0.17); an HTTP server for the payloads (127.66.0.16:80)
  and the C2 server that the beaconing implant polls (127.66.0.15), both small
  ``http.server`` threads of the lab process (:mod:`amlhp.lab.c2server`).

Payloads are deterministic pseudo-random bytes with an ELF or shell-script head, never
executable code.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

from amlhp.lab.c2server import C2Server, PayloadServer
from amlhp.lab.procs import ProcessGroup
from amlhp.lab.services import Endpoint
from amlhp.lab.topology import Topology

#: the attacker servers' addresses (markers of their scenarios; see amlhp.lab.attacks_c2)
BEACON_ATTACKER = 15
DOWNLOAD_ATTACKER = 16
EXFIL_ATTACKER = 17
REVSHELL_ATTACKER = 14
C2_PORT = 8081
REVSHELL_PORT = 4444
#: the DNS tunnel: iodine's top domain (``.test`` never resolves outside), its password
#: (lab-only) and the port iodined listens on behind the lab resolver
TUNNEL_DOMAIN = "t.tunnel.test"
TUNNEL_PASSWORD = "amlhp-lab-tunnel"
TUNNEL_PORT = 5300
#: iodine has no port option: the tunnel resolver is always on port 53
TUNNEL_RESOLVER_PORT = 53
PASV_PORTS = {DOWNLOAD_ATTACKER: (40000, 40099), EXFIL_ATTACKER: (40100, 40199)}

#: payload file names, as IoT droppers name them, and their sizes in bytes
PAYLOADS = {
    "bins.sh": 2_400,
    "mirai.arm7": 180_000,
    "mirai.mips": 160_000,
    "mozi.m": 310_000,
    "update.tar.gz": 900_000,
}

LOGIN_SCRIPT = """#!/bin/sh
# amlhp lab: a device login that refuses every password (see amlhp.lab.attack_services)
i=0
while [ $i -lt 3 ]; do
  printf 'iot-camera login: '
  read -r user || exit 1
  printf 'Password: '
  read -r password || exit 1
  sleep 1
  printf '\\r\\nLogin incorrect\\r\\n'
  i=$((i + 1))
done
exit 1
"""


def payload_bytes(name: str, size: int) -> bytes:
    """Deterministic content of a payload: a recognisable head, then pseudo-random bytes."""
    head = b"#!/bin/sh\n" if name.endswith(".sh") else b"\x7fELF\x01\x01\x01\x00"
    rng = random.Random(f"payload:{name}")
    return head + rng.randbytes(max(0, size - len(head)))


class AttackServices:
    """The second round's attack-side servers (a :class:`~amlhp.lab.services.ServiceSet`)."""

    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        self.workdir = workdir
        self.c2: C2Server | None = None
        self.payloads: PayloadServer | None = None

    def _dir(self, *parts: str, mode: int = 0o755) -> Path:
        path = self.workdir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path

    def endpoints(self) -> list[Endpoint]:
        t = self.topology
        tcp = socket.SOCK_STREAM
        return [
            (t.telnet_victim, t.ports.telnet, tcp),
            (t.dns_tunnel_resolver, TUNNEL_RESOLVER_PORT, socket.SOCK_DGRAM),
            (t.attacker(DOWNLOAD_ATTACKER), t.ports.ftp, tcp),
            (t.attacker(EXFIL_ATTACKER), t.ports.ftp, tcp),
            (t.attacker(DOWNLOAD_ATTACKER), t.ports.http, tcp),
            (t.attacker(BEACON_ATTACKER), C2_PORT, tcp),
        ]

    # -- configs ------------------------------------------------------------------
    def _inetd_config(self) -> Path:
        d = self._dir("telnet")
        login = d / "login.sh"
        login.write_text(LOGIN_SCRIPT)
        login.chmod(0o755)
        telnetd = shutil.which("telnetd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "telnetd"
        conf = d / "inetd.conf"
        t = self.topology
        conf.write_text(
            f"{t.telnet_victim}:{t.ports.telnet} stream tcp nowait root {telnetd} "
            f"telnetd --exec-login={login} --no-hostinfo\n"
        )
        return conf

    def payload_dir(self) -> Path:
        d = self._dir("ftp-download", mode=0o555)
        pub = self._dir("ftp-download", "pub")
        for name, size in PAYLOADS.items():
            path = pub / name
            if not path.exists() or path.stat().st_size != size:
                path.write_bytes(payload_bytes(name, size))
            path.chmod(0o644)
        pub.chmod(0o555)
        return d

    def _vsftpd_config(self, index: int, root: Path, *, upload: bool) -> Path:
        t = self.topology
        empty = self._dir("vsftpd-empty", mode=0o555)
        lo, hi = PASV_PORTS[index]
        address = t.attacker(index)
        lines = [
            "listen=YES",
            "listen_ipv6=NO",
            "background=NO",
            f"listen_address={address}",
            f"listen_port={t.ports.ftp}",
            "anonymous_enable=YES",
            "local_enable=NO",
            "no_anon_password=YES",
            f"anon_root={root}",
            f"secure_chroot_dir={empty}",
            "pasv_enable=YES",
            f"pasv_address={address}",
            f"pasv_min_port={lo}",
            f"pasv_max_port={hi}",
            "connect_from_port_20=NO",
            "seccomp_sandbox=NO",
            "xferlog_enable=NO",
            "dirmessage_enable=NO",
            "max_clients=64",
            "idle_session_timeout=60",
        ]
        if upload:
            lines += ["write_enable=YES", "anon_upload_enable=YES", "anon_umask=022"]
        conf = self.workdir / f"vsftpd-{index}.conf"
        conf.write_text("\n".join(lines) + "\n")
        conf.chmod(0o600)  # vsftpd refuses a config that others may write
        return conf

    def _drop_dir(self) -> Path:
        root = self._dir("ftp-drop", mode=0o555)
        incoming = self._dir("ftp-drop", "incoming", mode=0o755)
        for old in incoming.iterdir():
            old.unlink()
        try:
            import pwd

            ftp = pwd.getpwnam("ftp")
            os.chown(incoming, ftp.pw_uid, ftp.pw_gid)
        except KeyError:  # no ftp user: vsftpd's package makes it; uploads then fail loudly
            pass
        return root

    # -- lifecycle ----------------------------------------------------------------
    def start(self, group: ProcessGroup, logs: Path) -> None:
        t = self.topology
        self._dir()
        group.start(
            "inetd-telnet",
            ["inetutils-inetd", "-d", str(self._inetd_config())],
            log_path=logs / "inetd-telnet.log",
        )
        resolver = t.dns_tunnel_resolver
        group.start(
            "dnsmasq-tunnel",
            [
                "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                "--no-hosts", "--no-poll", "--bind-interfaces",
                f"--listen-address={resolver}", f"--port={TUNNEL_RESOLVER_PORT}",
                f"--server=/{TUNNEL_DOMAIN}/{t.tunnel_server}#{TUNNEL_PORT}@{resolver}",
                "--pid-file=", "--log-facility=-", "--cache-size=0",
            ],
            log_path=logs / "dnsmasq-tunnel.log",
        )  # fmt: skip
        download = self.payload_dir()
        for index, root, upload in (
            (DOWNLOAD_ATTACKER, download, False),
            (EXFIL_ATTACKER, self._drop_dir(), True),
        ):
            group.start(
                f"vsftpd-{index}",
                ["vsftpd", str(self._vsftpd_config(index, root, upload=upload))],
                log_path=logs / f"vsftpd-{index}.log",
            )
        self.payloads = PayloadServer(t.attacker(DOWNLOAD_ATTACKER), t.ports.http, download / "pub")
        self.payloads.start()
        self.c2 = C2Server(t.attacker(BEACON_ATTACKER), C2_PORT)
        self.c2.start()

    def stop(self) -> None:
        for server in (self.payloads, self.c2):
            if server is not None:
                server.stop()
        self.payloads = self.c2 = None
