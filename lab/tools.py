"""The programs the lab runs and the Debian packages they come from."""

from __future__ import annotations

import shutil
from pathlib import Path

from amlhp.lab.exceptions import MissingToolError

#: program -> Debian package, for error messages and ``amlhp lab check``
TOOLS: dict[str, str] = {
    "mosquitto": "mosquitto",
    "mosquitto_pub": "mosquitto-clients",
    "mosquitto_sub": "mosquitto-clients",
    "mosquitto_passwd": "mosquitto-clients",
    "coap-server-notls": "libcoap3-bin",
    "coap-client-notls": "libcoap3-bin",
    "nginx": "nginx-light",
    "sshd": "openssh-server",
    "ssh-keygen": "openssh-client",
    "dnsmasq": "dnsmasq-base",
    "tcpdump": "tcpdump",
    "hping3": "hping3",
    "nmap": "nmap",
    "hydra": "hydra",
    "ncrack": "ncrack",
    # second round
    "masscan": "masscan",
    "iodine": "iodine",
    "iodined": "iodine",
    "ip": "iproute2",
    "telnetd": "inetutils-telnetd",
    "inetutils-inetd": "inetutils-inetd",
    "lighttpd": "lighttpd",
    "php-cgi": "php-cgi",
    "sqlmap": "sqlmap",
    "dirb": "dirb",
    "slowhttptest": "slowhttptest",
    "ncat": "ncat",
    "socat": "socat",
    "vsftpd": "vsftpd",
    "curl": "curl",
    "mbpoll": "mbpoll",
    "openssl": "openssl",
    # below IP (amlhp.lab.arp_lan)
    "arpspoof": "dsniff",
    "ping": "iputils-ping",
    "atk6-fake_advertise6": "thc-ipv6",
    # the IPv4/IPv6 twins (amlhp.lab.twins)
    "nping": "nmap",
}
#: the Debian packages ``make lab-setup`` installs (kept in step with the Makefile)
DEBIAN_PACKAGES = tuple(sorted(set(TOOLS.values())))
_SBIN = (Path("/usr/sbin"), Path("/sbin"), Path("/usr/local/sbin"))


def tool_path(name: str) -> str:
    """Absolute path of a program (sbin folders included), or MissingToolError."""
    found = shutil.which(name)
    if found is None:
        for folder in _SBIN:
            candidate = folder / name
            if candidate.is_file():
                found = str(candidate)
                break
    if found is None:
        package = TOOLS.get(name, name)
        raise MissingToolError(
            f"{name} is not installed (Debian package {package}; run `make lab-setup`)"
        )
    return found


#: programs a scenario's own tool needs (its servers are in SERVER_PROGRAMS): a missing
#: one skips the scenario, with a message, instead of stopping the whole lab
ATTACK_PROGRAMS = frozenset(
    {"hping3", "nmap", "hydra", "ncrack", "masscan", "iodine", "iodined", "sqlmap", "dirb",
     "slowhttptest", "ncat", "socat", "mbpoll"}
)  # fmt: skip
#: programs every lab run needs: the servers, the capture, the benign devices
SERVER_PROGRAMS = frozenset(set(TOOLS) - ATTACK_PROGRAMS)


def missing_tools(names: frozenset[str] | set[str] | None = None) -> list[str]:
    """Programs of :data:`TOOLS` (or of ``names``) that are not installed."""
    missing = []
    for name in sorted(names) if names is not None else TOOLS:
        try:
            tool_path(name)
        except MissingToolError:
            missing.append(name)
    return missing
