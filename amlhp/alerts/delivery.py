"""Where exported incidents go: standard output, a rotating file, syslog or a webhook.

A SIEM takes incidents over one of these; each output gets one formatted record at a
time (:class:`Record`) and either takes it, fails for now (:class:`DeliveryFailed`: the
receiver is away or busy) or refuses it for good (:class:`DeliveryRejected`: a 4xx
answer, a record too long for a datagram). :func:`deliver` retries what failed for now
with exponential backoff, in order, up to ``max_attempts``; a record refused or still
failing after that is returned with its reason, for the caller to dead-letter. Once one
record used up its tries (the receiver is down), the next ones get one try each until one
passes, so an outage costs a batch one record's retries, not every record's. Nothing is
dropped without a reason.

* **syslog** (RFC 5424): ``<PRI>1 TIMESTAMP HOSTNAME amlhp PROCID incident - MSG``, the
  priority from the incident's severity (critical 2, high 3, medium 4, low 5) and the
  configured facility (default local0). Over TCP each message is framed by octet
  counting (RFC 6587 3.4.1), which rsyslog, syslog-ng and the SIEM collectors read; a
  connection is checked for a close by the server before each send, because plain TCP
  syslog has no acknowledgements and the first message written into a connection the
  server has closed would otherwise vanish. Over UDP a datagram is sent and not
  confirmed: use TCP where a record must not be lost.
* **webhook**: one HTTP POST per record (``application/json``, CEF as ``text/plain``),
  an optional bearer token (``AMLHP_EXPORT_WEBHOOK_TOKEN``, never logged); 2xx is
  delivered, 5xx, 408, 429 and connection errors are retried, other answers refused,
  redirects included (following one would turn the POST into a GET and could carry the
  token to another host).
* **file**: one line per record, rotated at ``max_bytes`` into ``NAME.1`` ... ``NAME.N``.
"""

from __future__ import annotations

import http.client
import logging
import os
import select
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from amlhp.alerts.exceptions import AlertsError

log = logging.getLogger(__name__)

#: syslog severities (RFC 5424 6.2.1) of the incident severities
SYSLOG_SEVERITY = {"critical": 2, "high": 3, "medium": 4, "low": 5}
FACILITIES = {"user": 1, "daemon": 3, "auth": 4, "authpriv": 10, "local0": 16, "local1": 17,
              "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22,
              "local7": 23}  # fmt: skip
#: the largest UDP syslog message sent (RFC 5426 asks receivers for at least 480 and
#: recommends 2048; larger datagrams are cut by many collectors)
UDP_MAX = 8192
#: HTTP answers worth trying again
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DeliveryFailed(AlertsError):
    """The receiver did not take the record now (away, busy); trying again may work."""


class DeliveryRejected(AlertsError):
    """The receiver refused the record for good: it goes to the dead letters."""


@dataclass(frozen=True)
class Record:
    """One formatted incident revision: ``key`` names it in logs and dead letters."""

    key: str
    line: str
    severity: str = "medium"
    time_ns: int = 0


class Output(Protocol):
    name: str

    def send(self, record: Record) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries per record, waiting ``base_s`` x 2^n (at most ``max_s``)."""

    max_attempts: int = 8
    base_s: float = 0.5
    max_s: float = 30.0

    def wait_s(self, attempt: int) -> float:
        return float(min(self.max_s, self.base_s * 2 ** max(0, attempt - 1)))


@dataclass
class DeliveryStats:
    delivered: int = 0
    retries: int = 0
    dead: int = 0


def deliver(
    output: Output,
    records: Sequence[Record],
    policy: RetryPolicy,
    stats: DeliveryStats | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[tuple[Record, str]]:
    """Send ``records`` in order; returns those that could not be delivered, with why."""
    stats = stats if stats is not None else DeliveryStats()
    dead: list[tuple[Record, str]] = []
    down = False  # a record just used up its tries: the next get one each until one passes
    for record in records:
        attempt = 1
        while True:
            try:
                output.send(record)
            except DeliveryRejected as exc:
                dead.append((record, f"rejected by {output.name}: {exc}"))
                break
            except DeliveryFailed as exc:
                if attempt >= (1 if down else policy.max_attempts):
                    reason = f"{output.name} failed {attempt} times, last: {exc}"
                    dead.append((record, reason))
                    down = True
                    break
                wait = policy.wait_s(attempt)
                log.warning("%s: %s not delivered (%s); try %d in %.1f s",
                            output.name, record.key, exc, attempt + 1, wait)  # fmt: skip
                stats.retries += 1
                attempt += 1
                sleep(wait)
            else:
                stats.delivered += 1
                down = False
                break
    stats.dead += len(dead)
    return dead


class StdoutOutput:
    name = "stdout"

    def send(self, record: Record) -> None:
        sys.stdout.write(record.line + "\n")
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


class FileOutput:
    """Lines appended to ``path``, rotated at ``max_bytes`` (``backups`` old files)."""

    def __init__(self, path: Path, max_bytes: int = 100 << 20, backups: int = 5) -> None:
        self.name = f"file {path}"
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("ab")

    def send(self, record: Record) -> None:
        data = (record.line + "\n").encode()
        try:
            if self._fh.closed:  # a rotation failed half-way: append where we are
                self._fh = self.path.open("ab")
            if self._fh.tell() and self._fh.tell() + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
        except OSError as exc:  # a full disk: the caller retries, then dead-letters
            raise DeliveryFailed(str(exc)) from exc

    def _rotate(self) -> None:
        self._fh.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.backups:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._fh = self.path.open("ab")

    def close(self) -> None:
        self._fh.close()


def rfc5424(record: Record, facility: int, hostname: str, pid: int) -> bytes:
    """One RFC 5424 message (no structured data; the record is the MSG)."""
    pri = facility * 8 + SYSLOG_SEVERITY.get(record.severity, 4)
    moment = datetime.fromtimestamp((record.time_ns or time.time_ns()) / 1e9, tz=UTC)
    stamp = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return f"<{pri}>1 {stamp} {hostname or '-'} amlhp {pid} incident - {record.line}".encode()


class SyslogOutput:
    """RFC 5424 over TCP (octet-counted frames) or UDP (see the module docstring)."""

    def __init__(
        self, host: str, port: int, transport: str = "tcp", facility: str = "local0"
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise AlertsError(f"syslog transport {transport!r}: expected tcp or udp")
        if facility not in FACILITIES:
            raise AlertsError(f"syslog facility {facility!r}: expected one of {sorted(FACILITIES)}")
        self.name = f"syslog {transport}://{host}:{port}"
        self.address = (host, port)
        self.transport = transport
        self.facility = FACILITIES[facility]
        self.hostname = socket.gethostname()
        self._sock: socket.socket | None = None

    def _connected(self) -> socket.socket:
        if self._sock is not None and self.transport == "tcp" and _closed_by_peer(self._sock):
            self._drop()
        if self._sock is None:
            kind = socket.SOCK_STREAM if self.transport == "tcp" else socket.SOCK_DGRAM
            sock = socket.socket(socket.AF_INET, kind)
            sock.settimeout(10.0)
            try:
                sock.connect(self.address)
            except OSError as exc:
                sock.close()
                raise DeliveryFailed(f"cannot connect: {exc}") from exc
            self._sock = sock
        return self._sock

    def send(self, record: Record) -> None:
        message = rfc5424(record, self.facility, self.hostname, os.getpid())
        if self.transport == "udp" and len(message) > UDP_MAX:
            raise DeliveryRejected(f"{len(message)} bytes: longer than a datagram of {UDP_MAX}")
        sock = self._connected()
        frame = message if self.transport == "udp" else b"%d %s" % (len(message), message)
        try:
            sock.sendall(frame)
        except OSError as exc:
            self._drop()
            raise DeliveryFailed(f"send: {exc}") from exc

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed a TCP connection (an EOF or an error is readable)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


class WebhookOutput:
    """One POST per record (see the module docstring)."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AlertsError(f"webhook URL {url!r}: expected http(s)://host[:port]/path")
        # the name goes into logs and dead letters: never the query nor user:password
        port = f":{parts.port}" if parts.port else ""
        self.name = f"webhook {parts.scheme}://{parts.hostname}{port}{parts.path}"
        # a redirect would turn the POST into a GET (body lost, "delivered") and carry the
        # token elsewhere: refused, so a 3xx is an answer that rejects the record
        self._opener = urllib.request.build_opener(_NoRedirect)
        self.url = url
        self.timeout_s = timeout_s
        self._token = token

    def send(self, record: Record) -> None:
        body = record.line.encode()
        kind = "text/plain" if record.line.startswith("CEF:") else "application/json"
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", kind)
        request.add_header("Idempotency-Key", record.key)
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in RETRY_STATUS:
                raise DeliveryFailed(f"HTTP {exc.code}") from exc
            raise DeliveryRejected(f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise DeliveryFailed(str(getattr(exc, "reason", exc))) from exc

    def close(self) -> None:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def open_output(target: str, token: str | None = None, max_bytes: int = 100 << 20) -> Output:
    """An output from its ``--to`` value: ``-`` (stdout), ``file:PATH``,
    ``syslog+tcp://HOST:PORT`` or ``syslog+udp://...`` (``?facility=local3``), or an
    ``http(s)://`` webhook URL."""
    if target in ("-", "stdout"):
        return StdoutOutput()
    if target.startswith("file:"):
        return FileOutput(Path(target.removeprefix("file:")), max_bytes=max_bytes)
    parts = urlsplit(target)
    if parts.scheme in ("syslog+tcp", "syslog+udp", "syslog"):
        if parts.hostname is None or parts.port is None:
            raise AlertsError(f"{target!r}: expected syslog+tcp://HOST:PORT")
        transport = "udp" if parts.scheme == "syslog+udp" else "tcp"
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        return SyslogOutput(parts.hostname, parts.port, transport, query.get("facility", "local0"))
    if parts.scheme in ("http", "https"):
        return WebhookOutput(target, token)
    raise AlertsError(
        f"--to {target!r}: expected -, file:PATH, syslog+tcp://HOST:PORT, "
        "syslog+udp://HOST:PORT or an http(s):// URL"
    )


__all__ = [
    "DeliveryFailed",
    "DeliveryRejected",
    "DeliveryStats",
    "FileOutput",
    "Output",
    "Record",
    "RetryPolicy",
    "StdoutOutput",
    "SyslogOutput",
    "WebhookOutput",
    "deliver",
    "open_output",
    "rfc5424",
]
