"""The web attacks' victim: lighttpd + PHP serving a deliberately vulnerable IoT-hub app.

One lighttpd, in the foreground (``lighttpd -D -f CONF``) with its own config under the
work dir, listens on the web application's address (``services:webapp``) and on port 80
of the three dedicated victim addresses (sqlmap's, dirb's and slowhttptest's: each tool
talks to its own address only, so that its packets can be labelled although it cannot
bind a source address). nginx binds only ``services:http``, so there is no clash.

PHP runs through mod_fastcgi, not mod_cgi: sqlmap and dirb send hundreds of requests a
second, and starting one php-cgi per request (mod_cgi) would cost the lab's two shared
cores far more than two resident php-cgi workers. php-cgi gets its own ini file
(``-c``) and no scan dir, so no system-wide PHP config is read either.

The application (PHP + SQLite, written under the work dir at every start) has three
deliberate holes, one per attack:

* ``/api/device.php?id=`` and ``/search.php?q=`` and the login form build their SQL by
  string concatenation and show SQLite's errors (SQL injection, for sqlmap). The
  database is opened read-only: sqlmap can read it, not change it.
* ``/view.php?file=`` reads ``files/`` + the parameter (path traversal).
* ``/diag.php?host=`` passes the parameter to ``/bin/sh`` (command injection).

What the holes can reach is kept harmless: lighttpd drops root for ``www-data`` after
binding its sockets and php-cgi runs as that user, so a traversal reads only what any
user may read (``/etc/passwd``), and an injected command runs unprivileged; the lab's own
payloads (:mod:`amlhp.lab.attacks_web`) are read-only commands (``id``, ``uname -a``)
that open no network connection. The diagnostics page itself runs only ``echo`` (no
name lookup, which could reach a resolver off this machine). Logs go to the ``logs``
folder the lab passes to :meth:`WebServices.start`.
"""

from __future__ import annotations

import os
import pwd
import socket
import sqlite3
from pathlib import Path

from amlhp.lab.procs import ProcessGroup
from amlhp.lab.services import Endpoint
from amlhp.lab.tools import tool_path
from amlhp.lab.topology import Topology

#: the unprivileged user lighttpd and php-cgi run as (Debian's web server user)
WEB_USER = "www-data"
#: the big file of the slow-read attack (its response must outlast the test)
FIRMWARE = "firmware/hub-fw-2.4.1.bin"
FIRMWARE_BYTES = 2 * 1024 * 1024

_COMMON_PHP = """<?php
// Lab IoT hub: a DELIBERATELY VULNERABLE application of the amlhp attack lab.
function db() {
    $db = new SQLite3(__DIR__ . '/../data/hub.db', SQLITE3_OPEN_READONLY);
    $db->enableExceptions(false);
    return $db;
}
function page($title, $body) {
    header('Content-Type: text/html; charset=utf-8');
    echo "<!doctype html><title>$title - Lab IoT hub</title><h1>$title</h1>\\n$body\\n";
    echo "<p><a href='/'>home</a> | <a href='/search.php'>devices</a> | ";
    echo "<a href='/view.php?file=manual.txt'>manual</a> | <a href='/diag.php'>diag</a></p>";
}
function rows($db, $sql) {
    $res = @$db->query($sql);
    if ($res === false) {
        http_response_code(500);
        return "<pre>SQLite error: " . htmlspecialchars($db->lastErrorMsg()) . "\\n"
            . htmlspecialchars($sql) . "</pre>";
    }
    $out = "<table>";
    while ($row = $res->fetchArray(SQLITE3_ASSOC)) {
        $out .= "<tr><td>" . implode("</td><td>", array_map('strval', $row)) . "</td></tr>";
    }
    return $out . "</table>";
}
"""

PAGES: dict[str, str] = {
    "index.php": """<?php require __DIR__ . '/../lib/common.php';
page('Dashboard', "<p>12 devices online. Firmware <a href='/firmware/'>downloads</a>,
<a href='/api/device.php?id=1'>device 1</a>, <a href='/login.php'>login</a>.</p>");
""",
    "api/device.php": """<?php require __DIR__ . '/../../lib/common.php';
// VULNERABLE: the id goes into the SQL text as it came.
$id = isset($_GET['id']) ? $_GET['id'] : '1';
page('Device', rows(db(), "SELECT id, name, kind, room, fw FROM devices WHERE id=" . $id));
""",
    "search.php": """<?php require __DIR__ . '/../lib/common.php';
// VULNERABLE: the search text goes into a LIKE pattern unescaped.
$q = isset($_GET['q']) ? $_GET['q'] : '';
$form = "<form><input name='q' value='" . htmlspecialchars($q) . "'><button>search</button></form>";
page('Devices', $form . rows(db(),
    "SELECT id, name, kind, room FROM devices WHERE name LIKE '%" . $q . "%' ORDER BY id"));
""",
    "login.php": """<?php require __DIR__ . '/../lib/common.php';
// VULNERABLE: user and password are concatenated into the query.
$u = isset($_REQUEST['user']) ? $_REQUEST['user'] : '';
$p = isset($_REQUEST['password']) ? $_REQUEST['password'] : '';
$msg = '';
if ($u !== '') {
    $db = db();
    $row = @$db->querySingle("SELECT name, role FROM users WHERE name='" . $u
        . "' AND password='" . $p . "'", true);
    if ($row === false) { http_response_code(500); $msg = 'error: ' . $db->lastErrorMsg(); }
    elseif ($row) { $msg = 'welcome ' . htmlspecialchars($row['name']) . " ({$row['role']})"; }
    else { $msg = 'wrong user name or password'; }
}
page('Login', "<p>$msg</p><form method='post'><input name='user'>"
    . "<input name='password' type='password'><button>login</button></form>");
""",
    "view.php": """<?php require __DIR__ . '/../lib/common.php';
// VULNERABLE: path traversal, the file name is not checked.
$f = isset($_GET['file']) ? $_GET['file'] : 'manual.txt';
$text = @file_get_contents(__DIR__ . '/../files/' . $f);
if ($text === false) { http_response_code(404); $text = "no such file: $f"; }
page('Document', '<pre>' . htmlspecialchars($text) . '</pre>');
""",
    "diag.php": """<?php require __DIR__ . '/../lib/common.php';
// VULNERABLE: command injection, the host goes to /bin/sh unquoted. The page itself only
// echoes (no name lookup that could leave the machine).
$h = isset($_GET['host']) ? $_GET['host'] : '';
$out = $h === '' ? 'give a host' : shell_exec('echo probing ' . $h . ' 2>&1; echo reachable');
page('Diagnostics', "<form><input name='host'><button>probe</button></form><pre>"
    . htmlspecialchars((string) $out) . '</pre>');
""",
}

#: static files, several of them under names in dirb's common.txt (so dirb finds some)
STATIC: dict[str, str] = {
    "robots.txt": "User-agent: *\nDisallow: /admin/\nDisallow: /backup/\n",
    "admin/index.html": "<!doctype html><title>admin</title><p>Hub administration</p>\n",
    "backup/index.html": "<!doctype html><title>backup</title><p>nightly config backups</p>\n",
    "backup/config.bak": "mqtt_user=hub\nmqtt_password=lab-only-not-secret\n",
    "config/index.html": "<!doctype html><title>config</title>\n",
    "images/logo.txt": "lab iot hub\n",
    "js/app.js": "console.log('hub');\n",
    "css/style.css": "body { font-family: sans-serif; }\n",
    "uploads/index.html": "<!doctype html><title>uploads</title>\n",
    "docs/index.html": "<!doctype html><title>docs</title>\n",
    "status": '{"hub":"lab","ok":true}\n',
    "firmware/index.html": "<!doctype html><a href='hub-fw-2.4.1.bin'>hub-fw-2.4.1.bin</a>\n",
}
FILES: dict[str, str] = {
    "manual.txt": "Lab IoT hub manual\n\n1. Pair a sensor.\n2. Read its values.\n",
    "release-notes.txt": "2.4.1: fixed MQTT reconnects\n",
}
DEVICES = [
    (1, "thermo-livingroom", "temperature", "living room", "2.4.1"),
    (2, "hygro-bath", "humidity", "bathroom", "2.4.1"),
    (3, "door-front", "door", "hall", "2.3.9"),
    (4, "light-kitchen", "light", "kitchen", "2.4.0"),
    (5, "plug-tv", "plug", "living room", "1.9.2"),
    (6, "cam-garden", "camera", "garden", "3.0.1"),
    (7, "smoke-hall", "smoke", "hall", "2.4.1"),
    (8, "valve-heating", "actuator", "cellar", "2.2.0"),
]
#: lab-only accounts (plain text on purpose: it is what sqlmap's dump finds)
USERS = [("admin", "hub-admin-lab", "admin"), ("viewer", "viewer-lab", "viewer")]


def _dir(path: Path, owner: tuple[int, int] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    if owner is not None:
        os.chown(path, *owner)
    return path


def _write(path: Path, text: str | bytes) -> None:
    _dir(path.parent)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(0o644)


class WebServices:
    """lighttpd with PHP over FastCGI on the web app's and the three victims' addresses."""

    def __init__(self, topology: Topology, workdir: Path) -> None:
        self.topology = topology
        self.workdir = workdir

    def endpoints(self) -> list[Endpoint]:
        t = self.topology
        return [
            (t.services, t.ports.webapp, socket.SOCK_STREAM),
            (t.sqli_victim, t.ports.http, socket.SOCK_STREAM),
            (t.dirbrute_victim, t.ports.http, socket.SOCK_STREAM),
            (t.slowdos_victim, t.ports.http, socket.SOCK_STREAM),
        ]

    # -- the application ----------------------------------------------------------
    def _database(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE devices (id INTEGER PRIMARY KEY, name, kind, room, fw)")
            db.executemany("INSERT INTO devices VALUES (?, ?, ?, ?, ?)", DEVICES)
            db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name, password, role)")
            db.executemany("INSERT INTO users (name, password, role) VALUES (?, ?, ?)", USERS)
        db.close()
        path.chmod(0o644)

    def _application(self) -> Path:
        """Write the app; returns its document root. Everything is readable, not writable,
        by the web user (only ``run`` and ``tmp`` belong to it)."""
        root = _dir(self.workdir)
        www = _dir(root / "www")
        _write(root / "lib" / "common.php", _COMMON_PHP)
        for name, text in PAGES.items():
            _write(www / name, text)
        for name, text in STATIC.items():
            _write(www / name, text)
        for name, text in FILES.items():
            _write(root / "files" / name, text)
        firmware = www / FIRMWARE
        if not firmware.exists() or firmware.stat().st_size != FIRMWARE_BYTES:
            # incompressible and deterministic: a slow reader gets it a window at a time
            block = bytes((i * 197 + 11) % 251 for i in range(4096))
            _write(firmware, block * (FIRMWARE_BYTES // len(block)))
        self._database(_dir(root / "data") / "hub.db")
        return www

    def _php_ini(self, logs: Path) -> Path:
        ini = self.workdir / "php.ini"
        _write(
            ini,
            "; amlhp lab php-cgi: only what the vulnerable app needs\n"
            "extension=sqlite3\n"
            "display_errors=On\n"
            "log_errors=On\n"
            "expose_php=On\n"
            "max_execution_time=10\n"
            "memory_limit=64M\n"
            "allow_url_fopen=Off\n"
            "cgi.fix_pathinfo=1\n"
            "session.save_path=/nonexistent\n",
        )
        return ini

    def _config(self, www: Path, logs: Path, owner: tuple[int, int]) -> Path:
        t = self.topology
        run = _dir(self.workdir / "run", owner)
        tmp = _dir(self.workdir / "tmp", owner)
        ini = self._php_ini(logs)
        for name in ("lighttpd-error.log", "lighttpd-access.log"):
            # lighttpd opens its logs after dropping root: they must be the web user's
            log = logs / name
            log.touch()
            os.chown(log, *owner)
            log.chmod(0o644)
        php = tool_path("php-cgi")
        victims = "\n".join(
            f'$SERVER["socket"] == "{a}:{t.ports.http}" {{ }}'
            for a in (t.sqli_victim, t.dirbrute_victim, t.slowdos_victim)
        )
        conf = self.workdir / "lighttpd.conf"
        _write(
            conf,
            f"""# amlhp lab: the vulnerable IoT hub (written at every start; no system config)
server.modules = ("mod_access", "mod_fastcgi", "mod_accesslog")
server.document-root = "{www}"
server.bind = "{t.services}"
server.port = {t.ports.webapp}
{victims}
server.username = "{WEB_USER}"
server.groupname = "{WEB_USER}"
server.errorlog = "{logs / "lighttpd-error.log"}"
accesslog.filename = "{logs / "lighttpd-access.log"}"
server.upload-dirs = ("{tmp}")
server.tag = "lighttpd (lab IoT hub)"
server.max-connections = 1024
server.max-fds = 4096
server.max-keep-alive-requests = 100
server.max-read-idle = 60
index-file.names = ("index.php", "index.html")
url.access-deny = ("~", ".inc", ".db")
static-file.exclude-extensions = (".php")
mimetype.assign = (
  ".html" => "text/html", ".txt" => "text/plain", ".css" => "text/css",
  ".js" => "application/javascript", ".json" => "application/json",
  ".bak" => "text/plain", "" => "application/octet-stream",
)
fastcgi.server = (".php" => ((
  "socket" => "{run / "php.socket"}",
  "bin-path" => "{php} -c {ini}",
  "bin-environment" => ("PHP_FCGI_CHILDREN" => "0", "PHP_FCGI_MAX_REQUESTS" => "5000",
                        "PHP_INI_SCAN_DIR" => "", "PATH" => "/usr/bin:/bin"),
  "bin-copy-environment" => ("LANG",),
  "max-procs" => 2,
  "broken-scriptfilename" => "enable",
)))
""",
        )
        return conf

    # -- the protocol -------------------------------------------------------------
    def start(self, group: ProcessGroup, logs: Path) -> None:
        user = pwd.getpwnam(WEB_USER)
        www = self._application()
        conf = self._config(www, logs, (user.pw_uid, user.pw_gid))
        group.start(
            "lighttpd",
            ["lighttpd", "-D", "-f", str(conf)],
            log_path=logs / "lighttpd.log",
        )

    def stop(self) -> None:
        return None  # lighttpd and its php-cgi workers are in the lab's ProcessGroup
