"""Servers for the second round's benign devices: MQTT over TLS, HTTPS, Modbus/TCP, mDNS/SSDP.

* A TLS-only Mosquitto broker on ``services:mqtts`` (anonymous clients allowed: the
  devices authenticate the broker by its certificate, as many consumer devices do).
* nginx with TLS on ``services:https`` serving a firmware manifest, firmware images and
  camera snapshots (a few hundred KB to a few MB of deterministic bytes), so that the
  captures hold TLS handshakes and bulk transfers like a real update or a snapshot pull.
* A pymodbus Modbus/TCP server (:mod:`amlhp.lab.modbus_server`, a child process) on
  ``services:modbus`` for the benign poller and on ``modbus_victim:modbus`` for the
  attack's writes and floods (each listener keeps its own register copy, so the attack
  cannot change what the benign poller reads).
* An mDNS (DNS-SD) and SSDP responder in threads of the lab on ``services:mdns`` and
  ``services:ssdp``. Real devices multicast to 224.0.0.251 and 239.255.255.250; the lab
  must stay on 127.0.0.0/8 and send nothing to a real network, so devices send their
  announcements and queries by unicast to the responder, which answers by unicast
  (RFC 6762 section 5.5 and UPnP's unicast M-SEARCH allow exactly this exchange).

Certificates: a throw-away CA and server certificate are made with ``openssl`` at every
start under the work dir (``tls/``); the devices trust ``tls/ca.crt``. The private keys
are world-readable (0644) because Mosquitto reads them after dropping root; they protect
nothing outside the lab.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from amlhp.lab.exceptions import ServiceError
from amlhp.lab.procs import ProcessGroup
from amlhp.lab.services import Endpoint, write_nginx_config
from amlhp.lab.tools import tool_path
from amlhp.lab.topology import Topology

log = logging.getLogger(__name__)

#: where the lab's work dir puts this set's files (runner: ``services/``, registry: ``benign/``)
SUBDIR = Path("services") / "benign"
#: (URL path, size in bytes, leading magic bytes) of the files nginx serves over HTTPS
DOWNLOADS = (
    ("/firmware/sensor-fw-2.4.2.bin", 1_200_000, b"\x27\x05\x19\x56"),  # U-Boot image magic
    ("/firmware/camera-fw-1.8.0.bin", 2_800_000, b"\x27\x05\x19\x56"),
    ("/snapshots/cam1.jpg", 240_000, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("/snapshots/cam2.jpg", 380_000, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("/snapshots/doorbell.jpg", 520_000, b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
)
#: DNS-SD services the responder announces: (instance, service type, port, TXT strings)
MDNS_SERVICES = (
    ("lab-hub", "_mqtt._tcp", "mqtts", ("tls=1", "ver=2.0")),
    ("lab-hub", "_https._tcp", "https", ("path=/",)),
    ("lab-hub", "_coap._udp", "coap", ("rt=core",)),
    ("lab-plc", "_modbus._tcp", "modbus", ("unit=1",)),
)
SSDP_TYPES = ("upnp:rootdevice", "urn:schemas-upnp-org:device:Basic:1")
SSDP_UUID = "uuid:6c616221-0000-4000-8000-00000000a001"


def lab_tls_dir(lab_workdir: Path) -> Path:
    """The TLS folder of the set, from the lab run's work dir (where devices find the CA)."""
    return lab_workdir / SUBDIR / "tls"


def make_certificates(folder: Path, topology: Topology) -> None:
    """A CA and a server certificate for ``lab.iot`` and the services address (EC P-256)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    openssl = tool_path("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ext = folder / "server.ext"
    ext.write_text(
        f"subjectAltName=DNS:lab.iot,DNS:hub.lab.iot,IP:{topology.services}\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "30",
         "-subj", "/O=amlhp lab/CN=amlhp lab CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/O=amlhp lab/CN=lab.iot"],
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "30", "-extfile", ext.name],
    ]  # fmt: skip
    for argv in steps:
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ServiceError(f"openssl failed: {done.stderr.strip()[-300:]}")
    for name in ("ca.crt", "server.crt", "server.key"):
        (folder / name).chmod(0o644)


def download_bytes(path: str, size: int, magic: bytes) -> bytes:
    """Deterministic content of a served file: its magic bytes, then seeded noise."""
    return magic + random.Random(f"download:{path}").randbytes(size - len(magic))


# -- mDNS / SSDP ----------------------------------------------------------------------
def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"


def read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A (possibly compressed) DNS name at ``offset``; returns it and the offset after it."""
    labels: list[str] = []
    end = -1
    for _ in range(64):  # bounded: a malicious pointer loop cannot hang the responder
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            continue
        if length == 0:
            return ".".join(labels), end if end >= 0 else offset + 1
        labels.append(data[offset + 1 : offset + 1 + length].decode(errors="replace"))
        offset += 1 + length
    raise ValueError("DNS name too long")


def rr(name: str, rtype: int, rdata: bytes, ttl: int = 120, flush: bool = False) -> bytes:
    cls = 0x8001 if flush else 0x0001  # cache-flush bit on unique records (RFC 6762 10.2)
    return dns_name(name) + struct.pack("!HHIH", rtype, cls, ttl, len(rdata)) + rdata


class DiscoveryResponder:
    """Answers unicast DNS-SD queries (PTR/SRV/TXT/A) and SSDP M-SEARCH for the lab hub."""

    def __init__(self, topology: Topology) -> None:
        self.t = topology
        self.socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((str(self.t.services), port))
        sock.settimeout(0.2)
        self.socks.append(sock)
        return sock

    def start(self) -> None:
        for name, port, handler in (
            ("mdns", self.t.ports.mdns, self._mdns_reply),
            ("ssdp", self.t.ports.ssdp, self._ssdp_reply),
        ):
            sock = self._bind(port)
            thread = threading.Thread(
                target=self._serve, args=(sock, handler), name=f"lab-{name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, handler: Callable[[bytes], list[bytes]]) -> None:
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                replies = handler(data)
            except (ValueError, IndexError, struct.error):
                continue  # malformed: a responder stays silent
            for reply in replies:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)

    def _records(self, qname: str, qtype: int) -> tuple[list[bytes], list[bytes]]:
        """(answers, additionals) for one question."""
        hub = "lab-hub.local"
        answers: list[bytes] = []
        extra: list[bytes] = []
        types = {s[1] + ".local" for s in MDNS_SERVICES}
        if qname == "_services._dns-sd._udp.local" and qtype in (12, 255):
            answers = [rr(qname, 12, dns_name(t), 4500) for t in sorted(types)]
        elif qname in types and qtype in (12, 255):
            for instance, service, port_name, txt in MDNS_SERVICES:
                if service + ".local" != qname:
                    continue
                full = f"{instance}.{qname}"
                port = getattr(self.t.ports, port_name)
                answers.append(rr(qname, 12, dns_name(full), 4500))
                target = dns_name(f"{instance}.local")
                extra.append(rr(full, 33, struct.pack("!HHH", 0, 0, port) + target, flush=True))
                text = b"".join(bytes([len(s)]) + s.encode() for s in txt)
                extra.append(rr(full, 16, text, 4500, flush=True))
                extra.append(rr(f"{instance}.local", 1, self.t.services.packed, flush=True))
        elif qname in (hub, "lab-plc.local") and qtype in (1, 255):
            answers = [rr(qname, 1, self.t.services.packed, flush=True)]
        elif qname.endswith(".local") and qtype == 1:
            return [], []  # not ours: an mDNS responder does not answer for others
        return answers, extra

    def _mdns_reply(self, data: bytes) -> list[bytes]:
        qid, flags, qdcount = struct.unpack("!HHH", data[:6])
        if flags & 0x8000:  # a response (another device's announcement): nothing to answer
            return []
        offset, questions, answers, extra = 12, b"", [], []
        for _ in range(min(qdcount, 8)):
            qname, offset = read_name(data, offset)
            qtype, _qclass = struct.unpack("!HH", data[offset : offset + 4])
            questions += dns_name(qname) + struct.pack("!HH", qtype, 1)
            offset += 4
            a, x = self._records(qname.lower(), qtype)
            answers += a
            extra += x
        if not answers:
            return []
        header = struct.pack("!HHHHHH", qid, 0x8400, min(qdcount, 8), len(answers), 0, len(extra))
        return [header + questions + b"".join(answers) + b"".join(extra)]

    def _ssdp_reply(self, data: bytes) -> list[bytes]:
        text = data.decode(errors="replace")
        if not text.startswith("M-SEARCH * HTTP/1.1"):
            return []  # NOTIFY announcements are only listened to
        headers = {}
        for line in text.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().upper()] = value.strip()
        st = headers.get("ST", "")
        wanted = SSDP_TYPES if st == "ssdp:all" else tuple(t for t in SSDP_TYPES if t == st)
        location = f"http://{self.t.services}:{self.t.ports.http}/upnp/hub.xml"
        return [
            (
                "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nEXT:\r\n"
                f"LOCATION: {location}\r\nSERVER: Linux/6.1 UPnP/1.1 amlhp-lab-hub/1.0\r\n"
                f"ST: {kind}\r\nUSN: {SSDP_UUID}::{kind}\r\nBOOTID.UPNP.ORG: 1\r\n\r\n"
            ).encode()
            for kind in wanted
        ]

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self.socks:
            sock.close()
        self._threads.clear()
        self.socks.clear()


class BenignServices:
    """The ServiceSet of the second round's benign servers (see the module docstring)."""

    def __init__(self, topology: Topology, workdir: Path, seed: int = 1) -> None:
        self.topology = topology
        self.workdir = workdir
        self.seed = seed
        self.discovery: DiscoveryResponder | None = None

    def endpoints(self) -> list[Endpoint]:
        t, tcp, udp = self.topology, socket.SOCK_STREAM, socket.SOCK_DGRAM
        return [
            (t.services, t.ports.mqtts, tcp),
            (t.services, t.ports.https, tcp),
            (t.services, t.ports.modbus, tcp),
            (t.modbus_victim, t.ports.modbus, tcp),
            (t.services, t.ports.mdns, udp),
            (t.services, t.ports.ssdp, udp),
        ]

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def _mosquitto_config(self, tls: Path) -> Path:
        t = self.topology
        conf = self._dir("mosquitto-tls") / "mosquitto.conf"
        # Listener options (max_connections, the TLS files) must follow the listener line:
        # placed before it, Mosquitto would open a default listener on 0.0.0.0:1883.
        conf.write_text(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
            f"listener {t.ports.mqtts} {t.services}\nmax_connections 128\n"
            f"cafile {tls / 'ca.crt'}\ncertfile {tls / 'server.crt'}\n"
            f"keyfile {tls / 'server.key'}\ntls_version tlsv1.2\n"
        )
        return conf

    def _nginx_config(self, tls: Path) -> Path:
        t, d = self.topology, self._dir("nginx-tls")
        www = self._dir("nginx-tls/www")
        for path, size, magic in DOWNLOADS:
            target = www / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.parent.chmod(0o755)
            if not target.exists() or target.stat().st_size != size:
                target.write_bytes(download_bytes(path, size, magic))
            target.chmod(0o644)
        manifest = www / "firmware" / "manifest.json"
        manifest.write_text(
            '{"sensor":{"version":"2.4.2","url":"/firmware/sensor-fw-2.4.2.bin"},'
            '"camera":{"version":"1.8.0","url":"/firmware/camera-fw-1.8.0.bin"}}\n'
        )
        manifest.chmod(0o644)
        return write_nginx_config(
            d,
            www,
            listen=f"{t.services}:{t.ports.https} ssl",
            types="application/json json; image/jpeg jpg; application/octet-stream bin;",
            worker_connections=512,
            server_extra=(
                f"ssl_certificate {tls / 'server.crt'}",
                f"ssl_certificate_key {tls / 'server.key'}",
                "ssl_protocols TLSv1.2 TLSv1.3",
            ),
        )

    def start(self, group: ProcessGroup, logs: Path) -> None:
        t = self.topology
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)
        tls = self.workdir / "tls"
        make_certificates(tls, t)
        group.start(
            "mosquitto-tls",
            ["mosquitto", "-c", str(self._mosquitto_config(tls))],
            log_path=logs / "mosquitto-tls.log",
        )
        nginx = self._nginx_config(tls)
        group.start(
            "nginx-tls",
            ["nginx", "-p", str(nginx.parent), "-c", str(nginx), "-g", "daemon off;"],
            log_path=logs / "nginx-tls.log",
        )
        group.start(
            "modbus-server",
            [
                sys.executable,
                "-m",
                "amlhp.lab.modbus_server",
                "--listen",
                f"{t.services}:{t.ports.modbus}",
                "--listen",
                f"{t.modbus_victim}:{t.ports.modbus}",
                "--seed",
                str(self.seed),
            ],
            log_path=logs / "modbus-server.log",
        )
        self.discovery = DiscoveryResponder(t)
        self.discovery.start()

    def stop(self) -> None:
        if self.discovery is not None:
            self.discovery.stop()
            self.discovery = None
