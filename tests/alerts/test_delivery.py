"""Exported incidents reach real receivers: a real rsyslog (RFC 5424 over TCP and UDP) and
a real HTTP server; what keeps failing is returned with a reason, never dropped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from amlhp.alerts.delivery import (
    DeliveryStats,
    FileOutput,
    Record,
    RetryPolicy,
    deliver,
    open_output,
    rfc5424,
)
from amlhp.alerts.exceptions import AlertsError
from tests.support.receivers import rsyslog, webhook

FAST = RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.05)


def records(n: int, prefix: str = "inc") -> list[Record]:
    return [
        Record(f"{prefix}{i}:0", f'{{"incident_id": "{prefix}{i}"}}', "high", 1_800_000_000 * 10**9)
        for i in range(n)
    ]


def test_an_rfc5424_message_has_the_priority_of_the_severity_and_facility() -> None:
    message = rfc5424(Record("a:1", "CEF:0|x", "critical", 1_800_000_000 * 10**9), 16, "h", 7)
    assert message == b"<130>1 2027-01-15T08:00:00.000000Z h amlhp 7 incident - CEF:0|x"


def test_syslog_over_tcp_and_udp_is_parsed_by_rsyslog(tmp_path: Path) -> None:
    with rsyslog(tmp_path / "rsyslog") as server:
        tcp = open_output(f"syslog+tcp://127.0.0.1:{server.port}")
        udp = open_output(f"syslog+udp://127.0.0.1:{server.port}?facility=local3")
        assert deliver(tcp, records(3), FAST) == []
        assert deliver(udp, [Record("u:0", "CEF:0|amlhp|x", "critical")], FAST) == []
        lines = server.lines(want=4)
        tcp.close()
        udp.close()
    assert sorted(lines) == sorted(
        [f'3|local0|amlhp|incident|1|{{"incident_id": "inc{i}"}}' for i in range(3)]
        + ["2|local3|amlhp|incident|1|CEF:0|amlhp|x"]
    )


def test_syslog_down_then_back_loses_nothing(tmp_path: Path) -> None:
    """The receiver stops after three records; the next three wait, retried, until it is
    back on the same port: all six arrive, none twice."""
    with rsyslog(tmp_path / "rsyslog") as server:
        output = open_output(f"syslog+tcp://127.0.0.1:{server.port}")
        first, second = records(3, "a"), records(3, "b")
        assert deliver(output, first, FAST) == []
        server.lines(want=3)
        server.stop()
        stats = DeliveryStats()
        dead: list[tuple[Record, str]] = []
        policy = RetryPolicy(max_attempts=60, base_s=0.1, max_s=0.2)
        sender = threading.Thread(
            target=lambda: dead.extend(deliver(output, second, policy, stats))
        )
        sender.start()
        time.sleep(1.5)
        assert sender.is_alive(), "the records were taken while the receiver was down"
        server.start()
        sender.join(30)
        assert dead == []
        assert stats.retries >= 1
        lines = server.lines(want=6)
        output.close()
    sent = [f'{{"incident_id": "{k}{i}"}}' for k in "ab" for i in range(3)]
    assert sorted(line.split("|")[-1] for line in lines) == sorted(sent)


def test_a_webhook_is_retried_through_5xx_then_delivered() -> None:
    with webhook(lambda n, body: 500 if n < 2 else 200) as hook:
        stats = DeliveryStats()
        output = open_output(hook.url, token="t0ken")
        assert deliver(output, records(1), FAST, stats) == []
    assert (stats.delivered, stats.retries) == (1, 2)
    assert [r.body for r in hook.received] == [b'{"incident_id": "inc0"}'] * 3
    last = hook.received[-1]
    assert last.headers["Idempotency-Key"] == "inc0:0"
    assert last.headers["Authorization"] == "Bearer t0ken"
    assert last.headers["Content-Type"] == "application/json"


def test_a_webhook_that_keeps_failing_dead_letters_with_a_reason() -> None:
    with webhook(lambda n, body: 503 if b"inc1" in body else 200) as hook:
        output = open_output(hook.url)
        dead = deliver(output, records(3), FAST)
    assert [(r.key, reason) for r, reason in dead] == [
        ("inc1:0", f"webhook http://127.0.0.1:{hook.port}/hook failed 3 times, last: HTTP 503")
    ]
    assert "secret" not in dead[0][1]  # the URL's query (a key) stays out of the reason
    assert sum(b"inc1" in r.body for r in hook.received) == 3
    assert sum(b"inc1" not in r.body for r in hook.received) == 2


def test_a_webhook_refusal_is_not_retried() -> None:
    with webhook(lambda n, body: 400) as hook:
        dead = deliver(open_output(hook.url), records(1), FAST)
    assert len(hook.received) == 1
    assert dead[0][1].endswith("HTTP 400")
    assert dead[0][1].startswith("rejected by webhook")


def test_a_receiver_that_is_not_there_dead_letters_after_the_retries() -> None:
    from tests.support.receivers import free_port

    dead = deliver(open_output(f"syslog+tcp://127.0.0.1:{free_port()}"), records(1), FAST)
    assert len(dead) == 1
    assert "failed 3 times" in dead[0][1]
    assert "cannot connect" in dead[0][1]


def test_a_file_output_rotates(tmp_path: Path) -> None:
    path = tmp_path / "incidents.ndjson"
    output = FileOutput(path, max_bytes=100, backups=2)
    for record in records(12):
        output.send(record)
    output.close()
    files = [path, path.with_name("incidents.ndjson.1"), path.with_name("incidents.ndjson.2")]
    assert all(f.exists() for f in files)
    assert not path.with_name("incidents.ndjson.3").exists()
    assert all(f.stat().st_size <= 100 for f in files)
    assert path.read_text().splitlines()[-1] == '{"incident_id": "inc11"}'


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("ftp://x", "expected -, file:PATH"),
        ("syslog+tcp://host", "expected syslog+tcp://HOST:PORT"),
        ("syslog+udp://h:1?facility=kernel", "syslog facility 'kernel'"),
    ],
)
def test_a_bad_target_is_a_clear_error(target: str, says: str) -> None:
    with pytest.raises(AlertsError, match=says.replace("+", r"\+").replace("?", r"\?")):
        open_output(target)


def test_a_webhook_redirect_is_refused_not_followed() -> None:
    """Following it would POST nothing (a GET) and carry the token elsewhere."""
    import http.server

    got: list[str] = []

    class Moved(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.command)
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Moved)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        dead = deliver(open_output(url, token="t"), records(1), FAST)
    finally:
        server.shutdown()
        server.server_close()
    assert got == ["POST"]
    assert dead[0][1].endswith("HTTP 302")


def test_a_broken_http_answer_is_a_failure_not_a_crash() -> None:
    """A server that promises 10 bytes and closes after 2: retried, then dead-lettered."""
    import socket

    stats = DeliveryStats()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(FAST.max_attempts):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
            conn.close()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        dead = deliver(open_output(f"http://127.0.0.1:{port}/x"), records(1), FAST, stats)
    finally:
        server.join(10)
        listener.close()
    assert len(dead) == 1
    assert stats.retries == FAST.max_attempts - 1


def test_after_a_record_used_up_its_tries_the_next_get_one_each() -> None:
    from tests.support.receivers import free_port

    stats = DeliveryStats()
    dead = deliver(open_output(f"syslog+tcp://127.0.0.1:{free_port()}"), records(4), FAST, stats)
    assert len(dead) == 4
    assert stats.retries == FAST.max_attempts - 1  # the first record's only
    assert [reason.split(" failed ")[1][:7] for _, reason in dead] == ["3 times"] + ["1 times"] * 3
