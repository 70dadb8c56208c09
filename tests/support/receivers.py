"""Real receivers for the export tests: Debian's rsyslogd on a local port, and an HTTP
server (the standard library's) whose answers a test scripts."""

from __future__ import annotations

import http.server
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: what the test's rsyslog writes per message: what it parsed of the RFC 5424 header
FIELDS = "%syslogseverity%|%syslogfacility-text%|%app-name%|%msgid%|%protocol-version%|%msg%"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rsyslog:
    """``rsyslogd -n`` with a configuration of its own: TCP and UDP on ``port`` of
    127.0.0.1, every message to ``out`` as :data:`FIELDS`."""

    def __init__(self, workdir: Path, port: int) -> None:
        binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
        if not Path(binary).exists():
            pytest.skip("rsyslogd is not installed (Debian's rsyslog package: make setup)")
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self.out = workdir / "received.log"
        self.conf = workdir / "rsyslog.conf"
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            f'global(workDirectory="{workdir}")\n'
            'module(load="imtcp")\nmodule(load="imudp")\n'
            f'input(type="imtcp" port="{port}" address="127.0.0.1")\n'
            f'input(type="imudp" port="{port}" address="127.0.0.1")\n'
            f'template(name="fields" type="string" string="{FIELDS}\\n")\n'
            f'*.* action(type="omfile" file="{self.out}" template="fields")\n'
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        pid = self.workdir / "rsyslogd.pid"
        pid.unlink(missing_ok=True)
        log = (self.workdir / "rsyslogd.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-n", "-f", str(self.conf), "-i", str(pid)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"rsyslogd did not listen on {self.port}: see {self.workdir}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(15)
        self.proc = None

    def lines(self, want: int = 0, timeout_s: float = 10.0) -> list[str]:
        """The messages received so far (waiting up to ``timeout_s`` for ``want``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.out.read_text() if self.out.exists() else ""
            lines = text.splitlines()
            if len(lines) >= want or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)


@contextmanager
def rsyslog(workdir: Path) -> Iterator[Rsyslog]:
    server = Rsyslog(workdir, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Received:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Webhook:
    """A local HTTP server: ``answer(request number, body)`` gives each POST's status."""

    answer: Callable[[int, bytes], int]
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?key=secret"


@contextmanager
def webhook(answer: Callable[[int, bytes], int]) -> Iterator[Webhook]:
    hook = Webhook(answer)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                n = len(hook.received)
                hook.received.append(Received(self.path, body, dict(self.headers.items())))
            status = hook.answer(n, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
