"""The lab's one hard rule: every target and every address is in 127.0.0.0/8.

All lab traffic must stay on this machine. Addresses are therefore parsed strictly (a
dotted quad, no host names that a resolver could turn into anything, no IPv6, no
ranges) and checked against 127.0.0.0/8 before any tool starts. :func:`check_argv` is a
second, independent check on each finished command line: any token that contains an
IPv4 literal, a CIDR or a URL host outside 127.0.0.0/8, or an IPv6 literal, is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from urllib.parse import urlsplit

from amlhp.lab.exceptions import UnsafeTargetError

LOOPBACK_NET = IPv4Network("127.0.0.0/8")

_DOTTED_QUAD = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_IPV4_ANYWHERE = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_IPV6_LITERAL = re.compile(r"\[[0-9a-fA-F:.]*:[0-9a-fA-F:.]*\]|^[0-9a-fA-F]*::[0-9a-fA-F:]*$")


def loopback_address(value: str | IPv4Address) -> IPv4Address:
    """Parse ``value`` as one IPv4 address in 127.0.0.0/8, or raise UnsafeTargetError."""
    if isinstance(value, IPv4Address):
        address = value
    else:
        text = str(value).strip()
        if not _DOTTED_QUAD.match(text):
            raise UnsafeTargetError(
                f"{text!r} is not a dotted-quad IPv4 address (host names, ranges and IPv6 "
                "are refused: the lab only targets 127.0.0.0/8)"
            )
        try:
            parsed = ip_address(text)
        except ValueError as exc:
            raise UnsafeTargetError(f"{text!r} is not a valid IPv4 address") from exc
        if not isinstance(parsed, IPv4Address):  # pragma: no cover - regex admits IPv4 only
            raise UnsafeTargetError(f"{text!r} is not an IPv4 address")
        address = parsed
    if address not in LOOPBACK_NET:
        raise UnsafeTargetError(f"{address} is outside 127.0.0.0/8: the lab refuses to use it")
    return address


def loopback_network(value: str | IPv4Network) -> IPv4Network:
    """Parse ``value`` as an IPv4 network inside 127.0.0.0/8, or raise UnsafeTargetError."""
    if isinstance(value, IPv4Network):
        network = value
    else:
        try:
            parsed = ip_network(str(value).strip(), strict=True)
        except ValueError as exc:
            raise UnsafeTargetError(f"{value!r} is not a valid IPv4 network") from exc
        if not isinstance(parsed, IPv4Network):
            raise UnsafeTargetError(f"{value!r} is not an IPv4 network")
        network = parsed
    if not network.subnet_of(LOOPBACK_NET):
        raise UnsafeTargetError(f"{network} is not inside 127.0.0.0/8: the lab refuses it")
    return network


def _check_token(token: str) -> None:
    if _IPV6_LITERAL.search(token):
        raise UnsafeTargetError(f"command argument {token!r} holds an IPv6 literal")
    if _URL.match(token):
        host = urlsplit(token).hostname or ""
        loopback_address(host)
    for literal in _IPV4_ANYWHERE.findall(token):
        loopback_address(literal)


def check_argv(argv: Sequence[str]) -> None:
    """Refuse a command line that names any address outside 127.0.0.0/8.

    Called right before every tool starts, on the exact argv it will get.
    """
    if not argv:
        raise UnsafeTargetError("empty command line")
    for token in argv[1:]:
        _check_token(str(token))
