"""Benign IoT traffic: sensors, actuators and a dashboard talking to the lab's real servers.

* MQTT: telemetry sensors keep one connection each (``mosquitto_pub -l``, QoS 0 or 1, some
  on the broker with a password file), door/motion sensors connect per event with valid
  credentials (so that a successful CONNECT is benign traffic too), actuators and a
  dashboard subscribe (``mosquitto_sub``), a controller publishes commands.
* CoAP: ``coap-client`` GET/PUT/discovery against libcoap's server.
* HTTP: devices poll the web server (status, config, firmware version).
* DNS and NTP: name lookups against dnsmasq and time requests against the NTP responder.
* The second round's devices (:mod:`amlhp.lab.benign_devices`): MQTT over TLS, CoAP
  observe, mDNS/SSDP chatter, HTTPS firmware and snapshot downloads, a Modbus/TCP poller.

Every client binds a sensor address (127.10.0.x). Timing and values come from a seeded
random generator; ``rate`` scales how often everything happens.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import IO

from amlhp.lab.benign_devices import NetworkDevices, child_is_ours
from amlhp.lab.exceptions import LabError
from amlhp.lab.procs import Child, ProcessGroup
from amlhp.lab.services import NTP_EPOCH_OFFSET, Credentials
from amlhp.lab.topology import Topology

log = logging.getLogger(__name__)

TELEMETRY = (
    ("kitchen", "temperature", 21.0, 0.4),
    ("kitchen", "humidity", 45.0, 2.0),
    ("livingroom", "temperature", 22.0, 0.3),
    ("livingroom", "co2", 600.0, 40.0),
    ("garage", "temperature", 12.0, 0.8),
    ("garden", "soil_moisture", 33.0, 1.5),
)
EVENT_SENSORS = (("frontdoor", "door"), ("hall", "motion"))
ACTUATORS = ("livingroom/light", "kitchen/plug", "garage/door")
DNS_NAMES = ("broker", "hub", "ntp", "firmware", "api", "cloud")
HTTP_PATHS = ("/api/status.json", "/api/config.json", "/firmware/version.txt", "/")
COAP_REQUESTS: tuple[tuple[str, ...], ...] = (
    ("-m", "get", "/time"),
    ("-m", "get", "/.well-known/core"),
    ("-m", "get", "/example_data"),
    ("-m", "put", "/example_data", "-e", "{value}"),
)


def lab_credentials(rng: random.Random) -> Credentials:
    """The lab's MQTT accounts; passwords drawn from the run's seed (lab-only, not secret)."""
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"

    def password() -> str:
        return "".join(rng.choice(alphabet) for _ in range(14))

    return Credentials(users=tuple((user, password()) for user in ("sensor01", "sensor02", "hub")))


def dns_query(name: str, qid: int) -> bytes:
    """A DNS A query for ``name`` (RFC 1035 wire format, recursion desired)."""
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def ntp_request() -> bytes:
    """An NTPv4 client request (mode 3) with the current transmit time."""
    now = time.time() + NTP_EPOCH_OFFSET
    return (
        struct.pack("!B", (4 << 3) | 3)
        + b"\0" * 39
        + struct.pack("!II", int(now), int((now % 1) * 2**32))
    )


class BenignTraffic:
    """Starts and stops the benign devices; counts what each kind did."""

    def __init__(
        self,
        topology: Topology,
        group: ProcessGroup,
        credentials: Credentials,
        workdir: Path,
        *,
        seed: int,
        rate: float = 1.0,
    ) -> None:
        if rate <= 0:
            raise LabError("the benign traffic rate must be positive")
        self.t = topology
        self.group = group
        self.credentials = credentials
        self.workdir = workdir
        self.seed = seed
        self.rate = rate
        self.stats: Counter[str] = Counter()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    # -- helpers ------------------------------------------------------------------
    def _sleep(self, rng: random.Random, mean_s: float) -> bool:
        """Sleep about ``mean_s / rate`` seconds; False when asked to stop."""
        return not self._stop.wait(rng.uniform(0.5, 1.5) * mean_s / self.rate)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _thread(self, name: str, target: Callable[[random.Random], None]) -> None:
        rng = random.Random(f"{self.seed}:{name}")

        def body() -> None:
            try:
                target(rng)
            except LabError as exc:  # the lab is shutting down under us
                log.debug("benign %s stopped: %s", name, exc)
            except OSError as exc:
                self._count("errors")
                log.warning("benign %s failed: %s", name, exc)

        thread = threading.Thread(target=body, name=f"lab-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _mqtt_base(self, sensor: IPv4Address, broker: IPv4Address, client_id: str) -> list[str]:
        return ["-A", str(sensor), "-h", str(broker), "-p", str(self.t.ports.mqtt), "-i", client_id]

    def _auth(self, index: int) -> list[str]:
        user, password = self.credentials.users[index % len(self.credentials.users)]
        return ["-u", user, "-P", password]

    # -- devices ------------------------------------------------------------------
    def _telemetry(self, index: int) -> Callable[[random.Random], None]:
        room, kind, mean, spread = TELEMETRY[index]
        sensor = self.t.sensor(index)
        with_auth = index % 3 == 2
        broker = self.t.auth_broker if with_auth else self.t.services
        qos = "1" if index % 2 else "0"

        def run(rng: random.Random) -> None:
            argv = [
                "mosquitto_pub",
                *self._mqtt_base(sensor, broker, f"{kind}-{room}-{index:02d}"),
                *(self._auth(index) if with_auth else []),
                "-t",
                f"lab/{room}/{kind}",
                "-q",
                qos,
                "-l",
            ]
            child = self.group.start(f"sensor-{index}", argv, stdin_pipe=True)
            stdin: IO[bytes] | None = child.popen.stdin
            assert stdin is not None
            value = mean
            while self._sleep(rng, 2.0):
                value += rng.gauss(0, spread) * 0.3 + (mean - value) * 0.1
                line = json.dumps({"v": round(value, 2), "u": kind, "ts": int(time.time())})
                try:
                    stdin.write(line.encode() + b"\n")
                    stdin.flush()
                except (BrokenPipeError, ValueError):
                    self._count("mqtt_pub_restart")
                    self.group.stop(child)
                    child = self.group.start(f"sensor-{index}", argv, stdin_pipe=True)
                    stdin = child.popen.stdin
                    assert stdin is not None
                    continue
                self._count("mqtt_publish")

        return run

    def _events(self, index: int) -> Callable[[random.Random], None]:
        room, kind = EVENT_SENSORS[index]
        sensor = self.t.sensor(6 + index)

        def run(rng: random.Random) -> None:
            while self._sleep(rng, 6.0):
                state = rng.choice(("open", "closed") if kind == "door" else ("motion", "idle"))
                argv = [
                    "mosquitto_pub",
                    *self._mqtt_base(sensor, self.t.auth_broker, f"{kind}-{room}"),
                    *self._auth(index),
                    "-t",
                    f"lab/{room}/{kind}",
                    "-q",
                    "1",
                    "-m",
                    json.dumps({"state": state, "ts": int(time.time())}),
                ]
                self.group.run(f"event-{room}", argv, timeout_s=10)
                self._count("mqtt_event")

        return run

    def _subscribers(self) -> None:
        for index, topic in enumerate(ACTUATORS):
            sensor = self.t.sensor(8 + index)
            argv = [
                "mosquitto_sub",
                *self._mqtt_base(sensor, self.t.services, f"actuator-{index}"),
                "-t",
                f"lab/{topic}/cmd",
                "-q",
                "1",
            ]
            self.group.start(f"actuator-{index}", argv)
        dashboard = self.t.sensor(11)
        self.group.start(
            "dashboard",
            [
                "mosquitto_sub",
                *self._mqtt_base(dashboard, self.t.services, "dashboard"),
                "-t",
                "lab/#",
                "-v",
            ],
        )
        self.group.start(
            "dashboard-auth",
            [
                "mosquitto_sub",
                *self._mqtt_base(dashboard, self.t.auth_broker, "dashboard-auth"),
                *self._auth(2),
                "-t",
                "lab/#",
                "-v",
            ],
        )

    def _controller(self, rng: random.Random) -> None:
        children: dict[str, Child] = {}
        while self._sleep(rng, 8.0):
            topic = rng.choice(ACTUATORS)
            if topic not in children or not children[topic].running():
                argv = [
                    "mosquitto_pub",
                    *self._mqtt_base(self.t.sensor(11), self.t.services, f"hub-{topic}"),
                    "-t",
                    f"lab/{topic}/cmd",
                    "-q",
                    "1",
                    "-l",
                ]
                children[topic] = self.group.start(f"controller-{topic}", argv, stdin_pipe=True)
            stdin = children[topic].popen.stdin
            assert stdin is not None
            command = json.dumps({"set": rng.choice(("on", "off", "toggle")), "by": "hub"})
            try:
                stdin.write(command.encode() + b"\n")
                stdin.flush()
            except (BrokenPipeError, ValueError):
                self.group.stop(children.pop(topic))
                continue
            self._count("mqtt_command")

    def _coap(self, rng: random.Random) -> None:
        while self._sleep(rng, 1.5):
            sensor = self.t.sensor(rng.randrange(len(self.t.sensors)))
            request = rng.choice(COAP_REQUESTS)
            args = [a.format(value=round(rng.uniform(10, 30), 1)) for a in request]
            path = args[2]
            argv = [
                "coap-client-notls",
                "-a",
                str(sensor),
                args[0],
                args[1],
                "-B",
                "3",
                *args[3:],
                f"coap://{self.t.services}:{self.t.ports.coap}{path}",
            ]
            self.group.run("coap-client", argv, timeout_s=6)
            self._count("coap_request")

    def _http(self, rng: random.Random) -> None:
        while self._sleep(rng, 0.7):
            sensor = self.t.sensor(rng.randrange(len(self.t.sensors)))
            conn = http.client.HTTPConnection(
                str(self.t.services), self.t.ports.http, timeout=5, source_address=(str(sensor), 0)
            )
            try:
                for _ in range(rng.choice((1, 1, 2, 3))):  # sometimes keep-alive
                    conn.request(
                        "GET",
                        rng.choice(HTTP_PATHS),
                        headers={"User-Agent": "iot-sensor/2.4", "Host": "lab.iot"},
                    )
                    conn.getresponse().read()
                    self._count("http_request")
            except (OSError, http.client.HTTPException) as exc:
                self._count("errors")
                log.debug("http poll failed: %s", exc)
            finally:
                conn.close()

    def _udp_client(self, rng: random.Random, kind: str) -> None:
        port = self.t.ports.dns if kind == "dns" else self.t.ports.ntp
        mean = 1.5 if kind == "dns" else 3.0
        while self._sleep(rng, mean):
            sensor = self.t.sensor(rng.randrange(len(self.t.sensors)))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind((str(sensor), 0))
                sock.settimeout(2)
                if kind == "dns":
                    name = f"{rng.choice(DNS_NAMES)}.lab.iot"
                    payload = dns_query(name, rng.randrange(1 << 16))
                else:
                    payload = ntp_request()
                sock.sendto(payload, (str(self.t.services), port))
                try:
                    sock.recvfrom(2048)
                    self._count(f"{kind}_exchange")
                except TimeoutError:
                    self._count(f"{kind}_timeout")

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> None:
        """Start every device (threads and client processes)."""
        self._stop.clear()
        self._subscribers()
        for index in range(len(TELEMETRY)):
            self._thread(f"telemetry-{index}", self._telemetry(index))
        for index in range(len(EVENT_SENSORS)):
            self._thread(f"events-{index}", self._events(index))
        self._thread("controller", self._controller)
        self._thread("coap", self._coap)
        self._thread("http", self._http)
        self._thread("dns", lambda rng: self._udp_client(rng, "dns"))
        self._thread("ntp", lambda rng: self._udp_client(rng, "ntp"))
        NetworkDevices(self).start()

    def stop(self) -> None:
        """Stop the device threads (their processes are stopped by the ProcessGroup)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self._threads.clear()
        with contextlib.suppress(LabError):
            for child in self.group.running():
                first = child.name.startswith(("sensor-", "actuator-", "dashboard", "controller-"))
                if first or child_is_ours(child):
                    self.group.stop(child)
