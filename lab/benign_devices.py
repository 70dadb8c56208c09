"""The second round's benign devices: MQTT over TLS, CoAP observe, mDNS/SSDP, HTTPS, Modbus.

They talk to the servers of :mod:`amlhp.lab.benign_services` (and to libcoap's server for
the observe), each client binding a sensor address (127.10.0.x) so that the labels file
calls every packet benign:

* MQTT over TLS: an energy meter, an air-quality sensor and a leak detector keep one TLS
  connection each (``mosquitto_pub -l --cafile``) and publish at their own cadence (10,
  30 and 60 s) with keep-alives shorter than the quiet leak detector's period, so the
  captures hold PINGREQ/PINGRESP inside TLS too; a wall panel subscribes over TLS.
* CoAP observe: two devices observe ``/time`` (``coap-client-notls -s``), libcoap's
  observable resource, and get a notification every second for the observation's life.
* mDNS/SSDP: devices announce their own services (unsolicited mDNS responses, twice as
  RFC 6762 section 8.3 asks), query DNS-SD service types, send SSDP ``NOTIFY ssdp:alive``
  and ``M-SEARCH``; by unicast to the lab's responder (the lab never multicasts).
* HTTPS: devices check the firmware manifest every ~8 s; every fourth check comes with a
  camera snapshot (a few hundred KB) and, rarely (3 %), a firmware image (1-3 MB); the
  clients verify the server against the lab's CA.
* Modbus/TCP: an HMI panel and a historian poll the PLC (input registers, coils, holding
  registers, discrete inputs) every 1.5-2 s over one kept-open connection and now and then
  write a setpoint or alarm limits.

Cadences are divided by the traffic's ``rate``; the volumes are small next to the first
round's devices except the HTTPS downloads' bytes (few packets: ``lo`` segments are 64 KB).
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import ssl
import struct
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from typing import IO, TYPE_CHECKING, Any

from amlhp.lab.benign_services import DOWNLOADS, SSDP_UUID, lab_tls_dir
from amlhp.lab.procs import Child

if TYPE_CHECKING:
    from amlhp.lab.benign import BenignTraffic

log = logging.getLogger(__name__)

#: (sensor index, client id, topic, mean publish period s, keepalive s, value maker name)
TLS_PUBLISHERS = (
    (3, "energy-meter-01", "lab/utility/energy", 10.0, 30, "energy"),
    (4, "airquality-02", "lab/bedroom/air", 30.0, 20, "air"),
    (5, "leak-detector-03", "lab/basement/leak", 60.0, 15, "leak"),
)
#: name prefixes of the long-lived clients started here (BenignTraffic.stop stops them)
CHILD_PREFIXES = ("tls-sensor-", "tls-panel")
MDNS_QUERIES = ("_services._dns-sd._udp.local", "_mqtt._tcp.local", "_https._tcp.local",
                "_coap._udp.local", "_modbus._tcp.local", "lab-hub.local")  # fmt: skip
DISCOVERY_CYCLE = ("query", "notify", "announce", "search", "query")
SSDP_TARGETS = ("ssdp:all", "upnp:rootdevice", "urn:schemas-upnp-org:device:Basic:1")


def mdns_query(name: str, qtype: int, unicast_response: bool) -> bytes:
    """An mDNS query (id 0, the QU bit asks for a unicast answer, RFC 6762 5.4)."""
    qclass = 0x8001 if unicast_response else 0x0001
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 0, 0, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, qclass)


def mdns_announcement(device: str, address: IPv4Address, port: int) -> bytes:
    """An unsolicited mDNS response announcing ``device``'s HTTP service and address."""

    def name(text: str) -> bytes:
        return b"".join(bytes([len(p)]) + p.encode() for p in text.split(".")) + b"\0"

    def record(owner: str, rtype: int, rdata: bytes, flush: bool) -> bytes:
        cls = 0x8001 if flush else 0x0001
        return name(owner) + struct.pack("!HHIH", rtype, cls, 120, len(rdata)) + rdata

    host, instance = f"{device}.local", f"{device}._http._tcp.local"
    records = [
        record("_http._tcp.local", 12, name(instance), False),
        record(instance, 33, struct.pack("!HHH", 0, 0, port) + name(host), True),
        record(instance, 16, b"\x08path=/ui", True),
        record(host, 1, address.packed, True),
    ]
    return struct.pack("!HHHHHH", 0, 0x8400, 0, len(records), 0, 0) + b"".join(records)


def ssdp_message(kind: str, sensor: IPv4Address, target: str, uuid: str, st: str) -> bytes:
    """An SSDP M-SEARCH for ``st`` (unicast form, no MX) or a NOTIFY ssdp:alive."""
    if kind == "search":
        lines = ["M-SEARCH * HTTP/1.1", f"HOST: {target}", 'MAN: "ssdp:discover"',
                 f"ST: {st}", "USER-AGENT: Linux/6.1 UPnP/1.1 iot/2.4"]  # fmt: skip
    else:
        lines = ["NOTIFY * HTTP/1.1", f"HOST: {target}", "CACHE-CONTROL: max-age=1800",
                 f"LOCATION: http://{sensor}:80/desc.xml", "NT: upnp:rootdevice",
                 "NTS: ssdp:alive", "SERVER: Linux/6.1 UPnP/1.1 iot/2.4",
                 f"USN: {uuid}::upnp:rootdevice"]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class NetworkDevices:
    """Starts the second round's devices on the threads and group of a BenignTraffic."""

    def __init__(self, traffic: BenignTraffic) -> None:
        self.tr = traffic
        self.t = traffic.t
        self.cafile = lab_tls_dir(traffic.workdir) / "ca.crt"

    def start(self) -> None:
        tr = self.tr
        if not self.cafile.exists():
            log.warning("no lab CA at %s: TLS devices will fail", self.cafile)
        self._tls_panel()
        for spec in TLS_PUBLISHERS:
            tr._thread(f"tls-{spec[1]}", self._tls_publisher(*spec))
        for index in (1, 8):
            tr._thread(f"coap-observe-{index}", self._coap_observe(index))
        tr._thread("discovery", self._discovery)
        tr._thread("https", self._https)
        tr._thread("modbus-hmi", self._modbus_poller(11, "hmi"))
        tr._thread("modbus-historian", self._modbus_poller(10, "historian"))

    # -- MQTT over TLS --------------------------------------------------------------
    def _tls_base(self, sensor: IPv4Address, client_id: str, keepalive: int) -> list[str]:
        return ["-A", str(sensor), "-h", str(self.t.services), "-p", str(self.t.ports.mqtts),
                "--cafile", str(self.cafile), "-k", str(keepalive), "-i", client_id]  # fmt: skip

    def _tls_panel(self) -> None:
        topics = ("lab/utility/#", "lab/bedroom/#", "lab/basement/#")
        argv = ["mosquitto_sub", *self._tls_base(self.t.sensor(11), "wall-panel", 20),
                *(a for topic in topics for a in ("-t", topic)), "-q", "1"]  # fmt: skip
        self.tr.group.start("tls-panel", argv)

    def _tls_publisher(
        self, index: int, client_id: str, topic: str, period: float, keepalive: int, kind: str
    ) -> Callable[[random.Random], None]:
        sensor = self.t.sensor(index)
        argv = ["mosquitto_pub", *self._tls_base(sensor, client_id, keepalive),
                "-t", topic, "-q", "1", "-l"]  # fmt: skip

        def value(rng: random.Random, state: dict[str, float]) -> dict[str, Any]:
            if kind == "energy":
                state["kwh"] = state.get("kwh", 4812.0) + rng.uniform(0.01, 0.05)
                return {"kwh": round(state["kwh"], 3), "w": round(rng.gauss(850, 60))}
            if kind == "air":
                return {"pm25": round(rng.gauss(9, 2), 1), "voc": rng.randint(80, 160)}
            return {"leak": False, "battery": rng.randint(88, 92)}

        def run(rng: random.Random) -> None:
            child = self.tr.group.start(f"tls-sensor-{index}", argv, stdin_pipe=True)
            state: dict[str, float] = {}
            while self.tr._sleep(rng, period):
                stdin: IO[bytes] | None = child.popen.stdin
                payload = json.dumps({**value(rng, state), "ts": int(time.time())})
                try:
                    assert stdin is not None
                    stdin.write(payload.encode() + b"\n")
                    stdin.flush()
                except (BrokenPipeError, ValueError):
                    self.tr._count("mqtt_tls_restart")
                    self.tr.group.stop(child)
                    child = self.tr.group.start(f"tls-sensor-{index}", argv, stdin_pipe=True)
                    continue
                self.tr._count("mqtt_tls_publish")

        return run

    # -- CoAP observe -----------------------------------------------------------------
    def _coap_observe(self, index: int) -> Callable[[random.Random], None]:
        sensor = self.t.sensor(index)
        url = f"coap://{self.t.services}:{self.t.ports.coap}/time"

        def run(rng: random.Random) -> None:
            while self.tr._sleep(rng, 3.0):
                seconds = rng.randint(8, 15)
                argv = ["coap-client-notls", "-a", str(sensor), "-m", "get",
                        "-s", str(seconds), "-B", str(seconds + 2), url]  # fmt: skip
                self.tr.group.run(f"coap-observe-{index}", argv, timeout_s=seconds + 5)
                self.tr._count("coap_observe")

        return run

    # -- mDNS / SSDP ------------------------------------------------------------------
    def _udp(self, sensor: IPv4Address, port: int, payload: bytes, wait_s: float) -> int:
        """Send one datagram from ``sensor`` (the protocol's own port where free); count replies."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((str(sensor), port))  # mDNS/SSDP speak from their own port
            except OSError:
                sock.bind((str(sensor), 0))
            sock.settimeout(wait_s)
            sock.sendto(payload, (str(self.t.services), port))
            replies = 0
            deadline = time.monotonic() + wait_s
            while wait_s > 0 and time.monotonic() < deadline:
                try:
                    sock.recvfrom(4096)
                    replies += 1
                except TimeoutError:
                    break
            return replies

    def _discovery(self, rng: random.Random) -> None:
        mdns, ssdp = self.t.ports.mdns, self.t.ports.ssdp
        turn = 0
        while self.tr._sleep(rng, 2.5):
            index = rng.randrange(len(self.t.sensors))
            sensor = self.t.sensor(index)
            action = DISCOVERY_CYCLE[turn % len(DISCOVERY_CYCLE)]  # every kind, in turn
            turn += 1
            if action == "announce":
                packet = mdns_announcement(f"iot-{index:02d}", sensor, 80)
                self._udp(sensor, mdns, packet, 0)
                if self.tr._stop.wait(1.0):
                    return
                self._udp(sensor, mdns, packet, 0)  # announcements go out twice
                self.tr._count("mdns_announce")
            elif action == "query":
                name = rng.choice(MDNS_QUERIES)
                qtype = 1 if name.endswith("hub.local") else 12
                got = self._udp(sensor, mdns, mdns_query(name, qtype, rng.random() < 0.5), 1.0)
                self.tr._count("mdns_answer" if got else "mdns_query_unanswered")
            else:
                kind = "search" if action == "search" else "notify"
                uuid = f"uuid:{SSDP_UUID[5:-2]}{index:02d}"
                target = f"{self.t.services}:{ssdp}"
                wait = 1.0 if kind == "search" else 0
                message = ssdp_message(kind, sensor, target, uuid, rng.choice(SSDP_TARGETS))
                got = self._udp(sensor, ssdp, message, wait)
                self.tr._count("ssdp_search_reply" if got else f"ssdp_{kind}")

    # -- HTTPS downloads --------------------------------------------------------------
    def _https(self, rng: random.Random) -> None:
        context: ssl.SSLContext | None = None
        cycle = 0
        while self.tr._sleep(rng, 8.0):
            if context is None:
                try:
                    context = ssl.create_default_context(cafile=str(self.cafile))
                except (OSError, ssl.SSLError) as exc:
                    self.tr._count("errors")
                    log.debug("no lab CA yet: %s", exc)
                    continue
            sensor = self.t.sensor(rng.randrange(len(self.t.sensors)))
            paths = ["/firmware/manifest.json"]
            if rng.random() < 0.03:  # an update is due: the image follows the manifest
                paths.append(rng.choice([p for p, _, _ in DOWNLOADS if "firmware" in p]))
            if cycle % 4 == 0:  # a viewer pulls a camera snapshot (first right after boot)
                paths.append(rng.choice([p for p, _, _ in DOWNLOADS if "snapshots" in p]))
            cycle += 1
            conn = http.client.HTTPSConnection(
                str(self.t.services), self.t.ports.https, timeout=10,
                source_address=(str(sensor), 0), context=context,
            )  # fmt: skip
            try:
                for path in paths:  # one kept-alive connection, as an updater does
                    headers = {"Host": "lab.iot", "User-Agent": "iot-ota/2.4"}
                    conn.request("GET", path, headers=headers)
                    body = conn.getresponse().read()
                    self.tr._count("https_download")
                    self.tr._count("https_bytes", len(body))
            except (OSError, http.client.HTTPException) as exc:
                self.tr._count("errors")
                log.debug("https download failed: %s", exc)
            finally:
                conn.close()

    # -- Modbus/TCP -------------------------------------------------------------------
    def _modbus_poller(self, index: int, role: str) -> Callable[[random.Random], None]:
        sensor = self.t.sensor(index)

        def run(rng: random.Random) -> None:
            try:
                from pymodbus.client import ModbusTcpClient
            except ImportError:  # the `lab` extra is missing: no poller, but the lab runs
                log.warning("pymodbus is not installed: no benign Modbus poller")
                return
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
            client = ModbusTcpClient(
                str(self.t.services), port=self.t.ports.modbus, timeout=2, retries=1,
                source_address=(str(sensor), 0), name=f"lab-{role}",
            )  # fmt: skip
            polls = 0
            period = 1.5 if role == "hmi" else 2.0
            try:
                while self.tr._sleep(rng, period):
                    if not client.connected and not client.connect():
                        self.tr._count("modbus_connect_failed")
                        continue
                    polls += 1
                    try:
                        self._modbus_cycle(client, rng, role, polls)
                    except Exception as exc:  # noqa: BLE001 - pymodbus raises its own types
                        self.tr._count("modbus_error")
                        log.debug("modbus %s poll failed: %s", role, exc)
                        client.close()
            finally:
                client.close()

        return run

    def _modbus_cycle(self, client: Any, rng: random.Random, role: str, polls: int) -> None:
        """One poll: always the process values, other tables every few polls, rare writes."""
        count = self.tr._count
        client.read_input_registers(0, count=10)
        count("modbus_read")
        if role == "hmi":
            if polls % 3 == 0:
                client.read_coils(0, count=16)
                count("modbus_read")
            if polls % 5 == 0:
                client.read_holding_registers(0, count=10)
                count("modbus_read")
            if rng.random() < 0.05:  # the operator nudges the temperature setpoint
                client.write_register(0, rng.randint(205, 225))
                count("modbus_write")
            if rng.random() < 0.02:
                client.write_coil(rng.randrange(4), rng.random() < 0.5)
                count("modbus_write")
        else:
            client.read_discrete_inputs(0, count=16)
            count("modbus_read")
            if polls % 10 == 0:
                client.read_holding_registers(10, count=30)
                count("modbus_read")
            if rng.random() < 0.02:  # alarm limits pushed from the historian's config
                client.write_registers(3, [rng.randint(290, 310), rng.randint(45, 55)])
                count("modbus_write")


def child_is_ours(child: Child) -> bool:
    """True for the long-lived clients this module starts (for BenignTraffic.stop)."""
    return child.name.startswith(CHILD_PREFIXES)
