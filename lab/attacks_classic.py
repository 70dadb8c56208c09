"""The lab's first attacks: hping3 floods, an HTTP flood, nmap scans, hydra and ncrack.

Rates are capped (``hping3 -i``, ``nmap --max-rate``) because the lab shares a small
machine; counts come from :func:`amlhp.lab.scenario.units`.
"""

from __future__ import annotations

from collections.abc import Callable

from amlhp.lab.scenario import (
    AttackContext,
    Scenario,
    ToolRun,
    driver_run,
    run_seed,
    time_limit,
    units,
    wordlists,
)


# -- floods (hping3 and the HTTP flooder) ---------------------------------------------
def _hping(
    mode: list[str], port: str, data: int
) -> Callable[[Scenario, AttackContext, int], ToolRun]:
    def build(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
        t = ctx.topology
        count = units(s, packets, 10, 60_000)
        dport = port.format(base=ctx.rng.randint(2000, 4000), http=t.ports.http)
        argv = [
            "hping3",
            *mode,
            "-p",
            dport,
            "-a",
            str(s.marker_address(t)),
            "-c",
            str(count),
            "-i",
            "u250",  # at most 4,000 packets/s
            "-d",
            str(data),
            "-q",
            str(s.target_address(t)),
        ]
        return ToolRun(argv, timeout_s=time_limit(ctx, count / 4000 * 1.5 + 5))

    return build


def _http_flood(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    requests = units(s, packets, 5, 20_000)
    return driver_run(
        "httpflood",
        time_limit(ctx, 120),
        "--source",
        str(s.marker_address(t)),
        "--target",
        str(s.target_address(t)),
        "--port",
        str(t.ports.http),
        "--requests",
        str(requests),
        "--workers",
        "6",
        "--seed",
        run_seed(ctx),
    )


# -- scans (nmap) ---------------------------------------------------------------------
def _nmap_base(s: Scenario, ctx: AttackContext, host_timeout: float) -> list[str]:
    return [
        "nmap",
        "-n",
        "-Pn",
        "-e",
        "lo",
        "-S",
        str(s.marker_address(ctx.topology)),
        "--host-timeout",
        f"{host_timeout:.0f}s",
    ]


def _port_range(ctx: AttackContext, count: int) -> str:
    start = ctx.rng.randint(1, max(1, 65535 - count))
    return f"{start}-{min(65535, start + count - 1)}"


def _port_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    ports = units(s, packets, 10, 30_000)
    limit = time_limit(ctx, 120)
    argv = [
        *_nmap_base(s, ctx, limit),
        "-sS",
        "--max-retries",
        "1",
        "--max-rate",
        "2000",
        "-p",
        _port_range(ctx, ports),
        str(s.target_address(ctx.topology)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _udp_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    ports = units(s, packets, 10, 20_000)
    limit = time_limit(ctx, 120)
    # Always include the lab's open UDP services, so that the scan also gets real replies.
    known = {t.ports.dns, t.ports.ntp, t.ports.coap}
    spec = ",".join([*(str(p) for p in sorted(known)), _port_range(ctx, ports)])
    argv = [
        *_nmap_base(s, ctx, limit),
        "-sU",
        "--max-retries",
        "1",
        "--max-rate",
        "1500",
        "-p",
        spec,
        str(s.target_address(t)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _os_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    del packets  # one OS detection is a few hundred packets; the runner repeats it
    limit = time_limit(ctx, 60)
    argv = [
        *_nmap_base(s, ctx, limit),
        "-O",
        "--max-os-tries",
        "1",
        "--top-ports",
        str(ctx.rng.choice((50, 100, 200))),
        "--max-rate",
        "1000",
        str(s.target_address(ctx.topology)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


def _aggressive_scan(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    limit = time_limit(ctx, 90)
    ports = units(s, packets, 20, 1000)
    # The lab's TCP services are always in the list, so versions and scripts run on them.
    known = sorted({t.ports.ssh, t.ports.dns, t.ports.http, t.ports.mqtt})
    spec = ",".join([*(str(p) for p in known), _port_range(ctx, ports)])
    argv = [
        *_nmap_base(s, ctx, limit),
        "-A",
        "-T4",
        "-p",
        spec,
        "--max-os-tries",
        "1",
        "--script-timeout",
        "10s",
        "--max-rate",
        "1000",
        str(s.target_address(t)),
    ]
    return ToolRun(argv, timeout_s=limit + 5)


# -- brute force (hydra, ncrack) ------------------------------------------------------


def _hydra(
    service: str, threads: int, most: int, found: str
) -> Callable[[Scenario, AttackContext, int], ToolRun]:
    """hydra's login guessing against the lab's ``service`` server, ``threads`` at once."""

    def build(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
        t = ctx.topology
        attempts = units(s, packets, 4, most)
        users, passwords = wordlists(ctx, attempts, service)
        limit = time_limit(ctx, 120)
        argv = [
            "hydra", "-L", str(users), "-P", str(passwords), "-t", str(threads), "-w", "10",
            "-I", "-o", str(ctx.workdir / found),
            f"{service}://{s.target_address(t)}:{getattr(t.ports, service)}",
        ]  # fmt: skip
        return ToolRun(argv, timeout_s=limit, cwd=ctx.workdir)

    return build


_ssh_bruteforce = _hydra("ssh", threads=4, most=400, found="hydra-found.txt")
#: Mirai-style: default credentials against telnet, several connections at once
_telnet_bruteforce = _hydra("telnet", threads=6, most=600, found="hydra-telnet-found.txt")


def _mqtt_bruteforce(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    attempts = units(s, packets, 4, 400)
    users, passwords = wordlists(ctx, attempts, "mqtt")
    limit = time_limit(ctx, 120)
    argv = [
        "ncrack",
        "-T4",
        "-U",
        str(users),
        "-P",
        str(passwords),
        "--connection-limit",
        "8",
        "-g",
        f"to={limit:.0f}s",
        "-oN",
        str(ctx.workdir / "ncrack-found.txt"),
        f"mqtt://{s.target_address(t)}:{t.ports.mqtt}",
    ]
    return ToolRun(argv, timeout_s=limit + 5, cwd=ctx.workdir)
