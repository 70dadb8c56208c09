"""Who is who in the lab: one loopback address per role, so labels follow from addresses.

* sensors and actuators (benign clients): ``127.10.0.1`` ... ``127.10.0.N``
* services: ``127.20.0.1`` (MQTT broker without authentication, web server, CoAP, DNS,
  NTP, SSH), ``127.20.0.2`` (MQTT broker with a password file)
* brute-force victims: ``127.20.0.3`` (a second listener of the authenticating broker) and
  ``127.20.0.4`` (a second listener of sshd). Only the brute-force tools talk to them:
  hydra and ncrack cannot bind a source address, so their packets (from the kernel's
  default ``127.0.0.1``) are told apart by these dedicated destinations.
* second-round victims, each talked to by one tool only (the same reason): ``127.20.0.5``
  (a resolver address of dnsmasq that forwards the DNS tunnel's domain), ``.7`` (telnetd),
  ``.8`` / ``.9`` / ``.10`` (listeners of the web application for sqlmap, dirb and
  slowhttptest), ``.12`` (a Modbus/TCP server for mbpoll's writes).
* a compromised device: ``127.20.0.11`` (the implant of the C2, download and exfiltration
  scenarios); their marker is the attacker's server it talks to.
* attackers: ``127.66.0.1`` ... one address per attack scenario that can set its source,
  or that runs the attacker's server (``127.66.0.20`` is the DNS tunnel's name server).

Linux answers for all of 127.0.0.0/8 on ``lo``, so no interface needs configuring. The
services keep their standard ports (the model sees ports, and real networks use them);
``--ports alternate`` moves them to high ports when another program holds one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network

from amlhp.lab.safety import loopback_address, loopback_network

SENSOR_NET = "127.10.0.0/16"
SERVICE_NET = "127.20.0.0/16"
ATTACKER_NET = "127.66.0.0/16"
#: source address the kernel picks on ``lo`` for tools that cannot bind one (hydra, ncrack)
KERNEL_SOURCE = "127.0.0.1"
#: the lab's own readiness probes come from here, never from a sensor or a marker address
CONTROL = "127.30.0.1"


@dataclass(frozen=True)
class Ports:
    """Service ports; ``standard`` by default, ``alternate`` when a standard one is taken."""

    mqtt: int = 1883
    http: int = 80
    ssh: int = 22
    coap: int = 5683
    dns: int = 53
    ntp: int = 123
    telnet: int = 23
    ftp: int = 21
    https: int = 443
    mqtts: int = 8883
    modbus: int = 502
    webapp: int = 8080
    mdns: int = 5353
    ssdp: int = 1900

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


PORT_PRESETS: dict[str, Ports] = {
    "standard": Ports(),
    "alternate": Ports(
        mqtt=11883,
        http=18080,
        ssh=12222,
        coap=15683,
        dns=15353,
        ntp=11123,
        telnet=12323,
        ftp=12121,
        https=18443,
        mqtts=18883,
        modbus=15020,
        webapp=18088,
        mdns=15354,
        ssdp=11900,
    ),
}


def _addr(text: str) -> IPv4Address:
    return loopback_address(text)


@dataclass(frozen=True)
class Topology:
    """The lab's addresses and ports, all validated to lie in 127.0.0.0/8."""

    sensors: tuple[IPv4Address, ...] = field(
        default_factory=lambda: tuple(_addr(f"127.10.0.{i}") for i in range(1, 13))
    )
    services: IPv4Address = field(default_factory=lambda: _addr("127.20.0.1"))
    auth_broker: IPv4Address = field(default_factory=lambda: _addr("127.20.0.2"))
    mqtt_bruteforce_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.3"))
    ssh_bruteforce_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.4"))
    dns_tunnel_resolver: IPv4Address = field(default_factory=lambda: _addr("127.20.0.5"))
    telnet_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.7"))
    sqli_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.8"))
    dirbrute_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.9"))
    slowdos_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.10"))
    implant: IPv4Address = field(default_factory=lambda: _addr("127.20.0.11"))
    modbus_victim: IPv4Address = field(default_factory=lambda: _addr("127.20.0.12"))
    tunnel_server: IPv4Address = field(default_factory=lambda: _addr("127.66.0.20"))
    kernel_source: IPv4Address = field(default_factory=lambda: _addr(KERNEL_SOURCE))
    #: source of the lab's own readiness checks (before any capture starts)
    control: IPv4Address = field(default_factory=lambda: _addr(CONTROL))
    ports: Ports = field(default_factory=Ports)

    def __post_init__(self) -> None:
        # Re-validate: a caller may have passed its own addresses.
        for address in self.all_addresses():
            loopback_address(address)
        for network in self.capture_networks():
            loopback_network(network)

    @staticmethod
    def attacker(index: int) -> IPv4Address:
        """The source address of the ``index``-th attack scenario (1-based)."""
        if not 1 <= index <= 254:
            raise ValueError(f"attacker index {index} outside 1..254")
        return loopback_address(f"127.66.0.{index}")

    def all_addresses(self) -> list[IPv4Address]:
        return [
            *self.sensors,
            self.services,
            self.auth_broker,
            self.mqtt_bruteforce_victim,
            self.ssh_bruteforce_victim,
            *self.victims(),
            self.implant,
            self.tunnel_server,
            self.kernel_source,
            self.control,
        ]

    @staticmethod
    def capture_networks() -> tuple[IPv4Network, ...]:
        return tuple(loopback_network(n) for n in (SENSOR_NET, SERVICE_NET, ATTACKER_NET))

    def capture_filter(self) -> str:
        """BPF filter: only packets to or from the lab's own networks (IPv4 on ``lo``)."""
        return " or ".join(f"net {network}" for network in self.capture_networks())

    def victims(self) -> tuple[IPv4Address, ...]:
        """The second round's dedicated victim addresses (one tool each)."""
        return (
            self.dns_tunnel_resolver,
            self.telnet_victim,
            self.sqli_victim,
            self.dirbrute_victim,
            self.slowdos_victim,
            self.modbus_victim,
        )

    def sensor(self, index: int) -> IPv4Address:
        return self.sensors[index % len(self.sensors)]
