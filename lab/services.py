"""The lab's real servers, each run in the foreground from its own config under the work dir.

Mosquitto (one broker without and one with a password file), nginx, OpenSSH's sshd,
libcoap's CoAP server, dnsmasq (DNS only) and a small NTP responder. No system-wide
config is read or changed: every program gets its own config file, logs to the work dir
and binds only the lab's service addresses. The only file outside the work dir is sshd's
privilege-separation folder ``/run/sshd``, created if missing (sshd refuses to start
without it).

sshd allows exactly one user name, which does not exist on the machine
(``AllowUsers amlhp-lab-nouser``): the SSH brute force gets real "Permission denied"
answers, and no account on the machine can be logged into through the lab.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from amlhp.lab.exceptions import ServiceError
from amlhp.lab.procs import ProcessGroup
from amlhp.lab.tools import tool_path
from amlhp.lab.topology import Topology

log = logging.getLogger(__name__)

SSH_ALLOWED_USER = "amlhp-lab-nouser"
NTP_EPOCH_OFFSET = 2_208_988_800


def wait_tcp(address: IPv4Address, port: int, source: IPv4Address, timeout_s: float = 10.0) -> None:
    """Wait until a TCP server accepts on ``address:port`` (connecting from ``source``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(
                (str(address), port), timeout=0.5, source_address=(str(source), 0)
            ):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ServiceError(f"nothing answers on {address}:{port}: {exc}") from exc
            time.sleep(0.1)


def write_nginx_config(
    d: Path,
    www: Path,
    *,
    listen: str,
    types: str,
    worker_connections: int,
    server_extra: Sequence[str] = (),
) -> Path:
    """Write ``d/nginx.conf`` for one lab nginx server serving ``www`` on ``listen``.

    nginx's built-in pid, log and temp paths lie under /var; every one of them is set to
    the server's own folder ``d`` so that no lab server writes outside the work dir. The
    lab's plain HTTP server and the benign devices' HTTPS server share this frame and
    differ only in their listener, MIME types, connection limit and ``server_extra``
    directives (the TLS files).
    """
    extra = "".join(f"    {line};\n" for line in server_extra)
    conf = d / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp-body;
  proxy_temp_path {d}/tmp-proxy;
  fastcgi_temp_path {d}/tmp-fastcgi;
  uwsgi_temp_path {d}/tmp-uwsgi;
  scgi_temp_path {d}/tmp-scgi;
  types {{ {types} }}
  default_type application/octet-stream;
  keepalive_timeout 15;
  server {{
    listen {listen};
    server_name lab.iot;
{extra}    root {www};
  }}
}}
"""
    )
    return conf


def check_free(address: IPv4Address, port: int, kind: int) -> None:
    """Raise ServiceError when another program already holds ``address:port``."""
    with socket.socket(socket.AF_INET, kind) as sock:
        if kind == socket.SOCK_STREAM:  # as servers do: TIME_WAIT leftovers do not count
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((str(address), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
                raise ServiceError(
                    f"{proto} {address}:{port} is taken by another program; "
                    "use `--ports alternate` or stop it"
                ) from exc
            raise ServiceError(f"cannot bind {address}:{port}: {exc}") from exc


@dataclass(frozen=True)
class Credentials:
    """Lab-only MQTT accounts (the password file holds their hashes)."""

    users: tuple[tuple[str, str], ...]


#: (address, port, socket.SOCK_STREAM or socket.SOCK_DGRAM) of one server socket
Endpoint = tuple[IPv4Address, int, int]


class ServiceSet(Protocol):
    """A group of lab servers that :class:`LabServices` starts beside its own.

    ``endpoints`` are checked free before anything starts; the TCP ones are waited for
    after :meth:`start`. Processes go into the lab's ProcessGroup (stopped with it);
    :meth:`stop` stops what runs in the lab's own process (threads, sockets).
    """

    def endpoints(self) -> list[Endpoint]: ...

    def start(self, group: ProcessGroup, logs: Path) -> None: ...

    def stop(self) -> None: ...


class NtpResponder:
    """A minimal NTP server (mode 4 replies to mode 3 requests) in a thread of the lab."""

    def __init__(self, address: IPv4Address, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((str(address), port))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="lab-ntp", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if len(data) < 48 or data[0] & 0x07 != 3:
                continue
            now = time.time() + NTP_EPOCH_OFFSET
            sec, frac = int(now), int((now % 1) * 2**32)
            reply = struct.pack(
                "!BBbbII4sIIIIIIII",
                (data[0] & 0x38) | 4,  # same version, mode 4 (server)
                2,  # stratum
                data[2],
                -20,
                0,
                0,
                b"LAB\0",
                sec,
                frac,
                *struct.unpack("!II", data[40:48]),  # originate = client's transmit
                sec,
                frac,
                sec,
                frac,
            )
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, peer)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


class LabServices:
    """Writes the configs and starts every lab server; stopped by the ProcessGroup."""

    def __init__(
        self,
        topology: Topology,
        workdir: Path,
        credentials: Credentials,
        extras: Sequence[ServiceSet] = (),
    ) -> None:
        self.topology = topology
        self.workdir = workdir
        self.credentials = credentials
        self.extras = tuple(extras)
        self.ntp: NtpResponder | None = None

    # -- configs ------------------------------------------------------------------
    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def _mosquitto_configs(self) -> tuple[Path, Path]:
        t, d = self.topology, self._dir("mosquitto")
        passwd = d / "passwd"
        passwd.unlink(missing_ok=True)
        passwd.touch()
        for user, password in self.credentials.users:
            subprocess.run(
                [tool_path("mosquitto_passwd"), "-b", str(passwd), user, password],
                check=True,
                capture_output=True,
                timeout=30,
            )
        passwd.chmod(0o644)  # hashes only; the broker reads it after dropping privileges
        common = "persistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        anon = d / "anonymous.conf"
        anon.write_text(
            "per_listener_settings false\nallow_anonymous true\n"
            f"listener {t.ports.mqtt} {t.services}\nmax_connections 256\n" + common
        )
        auth = d / "auth.conf"
        auth.write_text(
            "per_listener_settings false\nallow_anonymous false\n"
            f"password_file {passwd}\n"
            f"listener {t.ports.mqtt} {t.auth_broker}\n"
            f"listener {t.ports.mqtt} {t.mqtt_bruteforce_victim}\n"
            "max_connections 512\n" + common
        )
        return anon, auth

    def _nginx_config(self) -> Path:
        t, d = self.topology, self._dir("nginx")
        www = self._dir("nginx/www")
        (www / "api").mkdir(exist_ok=True)
        (www / "firmware").mkdir(exist_ok=True)
        (www / "index.html").write_text(
            "<!doctype html><title>IoT hub</title><h1>Lab IoT hub</h1>"
            "<p>Sensors: temperature, humidity, door, light.</p>\n"
        )
        (www / "api" / "status.json").write_text(
            '{"hub":"lab","uptime":12345,"devices":12,"ok":true}\n'
        )
        (www / "api" / "config.json").write_text(
            '{"interval_s":5,"mqtt":"lab.iot","units":"metric","tz":"UTC"}\n'
        )
        (www / "firmware" / "version.txt").write_text("sensor-fw 2.4.1\n")
        return write_nginx_config(
            d,
            www,
            listen=f"{t.services}:{t.ports.http}",
            types="text/html html; application/json json; text/plain txt;",
            worker_connections=1024,
        )

    def _sshd_config(self) -> Path:
        t, d = self.topology, self._dir("sshd")
        key = d / "ssh_host_ed25519_key"
        if not key.exists():
            subprocess.run(
                [tool_path("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
                check=True,
                capture_output=True,
                timeout=30,
            )
        key.chmod(0o600)
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        conf = d / "sshd_config"
        conf.write_text(
            f"""# amlhp lab sshd: password auth for one user name that does not exist
ListenAddress {t.services}:{t.ports.ssh}
ListenAddress {t.ssh_bruteforce_victim}:{t.ports.ssh}
HostKey {key}
PidFile none
AllowUsers {SSH_ALLOWED_USER}
PermitRootLogin no
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PubkeyAuthentication no
UsePAM no
MaxAuthTries 6
MaxSessions 1
MaxStartups 100:30:200
LoginGraceTime 15
UseDNS no
X11Forwarding no
AllowTcpForwarding no
PermitTunnel no
"""
        )
        conf.chmod(0o600)
        return conf

    # -- starting -----------------------------------------------------------------
    def _tcp_endpoints(self) -> list[tuple[IPv4Address, int]]:
        """(address, port) of every TCP server the lab runs."""
        t = self.topology
        return [
            (t.services, t.ports.mqtt),
            (t.auth_broker, t.ports.mqtt),
            (t.mqtt_bruteforce_victim, t.ports.mqtt),
            (t.services, t.ports.http),
            (t.services, t.ports.ssh),
            (t.ssh_bruteforce_victim, t.ports.ssh),
        ]

    def check_ports(self) -> None:
        t = self.topology
        udp = [(t.services, t.ports.coap), (t.services, t.ports.dns), (t.services, t.ports.ntp)]
        for address, port in self._tcp_endpoints():
            check_free(address, port, socket.SOCK_STREAM)
        for address, port in udp:
            check_free(address, port, socket.SOCK_DGRAM)
        for extra in self.extras:
            for address, port, kind in extra.endpoints():
                check_free(address, port, kind)

    def start(self, group: ProcessGroup) -> None:
        """Start every server and wait until each answers."""
        t, logs = self.topology, self._dir("logs")
        self.check_ports()
        anon, auth = self._mosquitto_configs()
        group.start("mosquitto", ["mosquitto", "-c", str(anon)], log_path=logs / "mosquitto.log")
        group.start(
            "mosquitto-auth",
            ["mosquitto", "-c", str(auth)],
            log_path=logs / "mosquitto-auth.log",
        )
        nginx = self._nginx_config()
        group.start(
            "nginx",
            ["nginx", "-p", str(nginx.parent), "-c", str(nginx), "-g", "daemon off;"],
            log_path=logs / "nginx.log",
        )
        sshd = self._sshd_config()
        group.start("sshd", ["sshd", "-D", "-e", "-f", str(sshd)], log_path=logs / "sshd.log")
        group.start(
            "coap-server",
            ["coap-server-notls", "-A", str(t.services), "-p", str(t.ports.coap)],
            log_path=logs / "coap-server.log",
        )
        group.start(
            "dnsmasq",
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--no-poll",
                "--bind-interfaces",
                f"--listen-address={t.services}",
                f"--port={t.ports.dns}",
                f"--address=/lab.iot/{t.services}",
                "--pid-file=",
                "--log-facility=-",
                "--cache-size=0",
            ],
            log_path=logs / "dnsmasq.log",
        )
        self.ntp = NtpResponder(t.services, t.ports.ntp)
        self.ntp.start()
        for extra in self.extras:
            extra.start(group, logs)
        waits = [
            (a, p) for e in self.extras for a, p, k in e.endpoints() if k == socket.SOCK_STREAM
        ]
        for address, port in [*self._tcp_endpoints(), *waits]:
            wait_tcp(address, port, t.control)
        dead = [c.name for c in group.exited()]
        if dead:
            raise ServiceError(f"lab services exited at start: {', '.join(dead)} (see {logs})")

    def stop(self) -> None:
        for extra in self.extras:
            extra.stop()
        if self.ntp is not None:
            self.ntp.stop()
            self.ntp = None
