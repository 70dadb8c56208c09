"""The lab's hard rule: nothing outside 127.0.0.0/8 is ever a target or an address."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amlhp.lab.exceptions import UnsafeTargetError
from amlhp.lab.safety import LOOPBACK_NET, check_argv, loopback_address, loopback_network
from amlhp.lab.scenarios import ATTACKS, PASSWORDS, USERS, AttackContext
from amlhp.lab.topology import Topology

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(IPv4Address)


@given(ipv4)
def test_an_address_is_accepted_exactly_when_it_is_in_127_0_0_0_8(address: IPv4Address) -> None:
    if address in LOOPBACK_NET:
        assert loopback_address(str(address)) == address
    else:
        with pytest.raises(UnsafeTargetError):
            loopback_address(str(address))
        with pytest.raises(UnsafeTargetError):
            loopback_address(address)


@pytest.mark.parametrize(
    "text",
    [
        "localhost",
        "127.1",
        "::1",
        "[::1]",
        "127.0.0.0/8",
        "127.0.0.1-5",
        "127.0.0.256",
        "",
        "0x7f000001",
    ],
)
def test_names_ranges_ipv6_and_short_forms_are_refused(text: str) -> None:
    with pytest.raises(UnsafeTargetError):
        loopback_address(text)


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "126.0.0.0/7", "10.0.0.0/8", "128.0.0.0/16"])
def test_networks_outside_loopback_are_refused(cidr: str) -> None:
    with pytest.raises(UnsafeTargetError):
        loopback_network(cidr)
    assert loopback_network("127.66.0.0/16").num_addresses == 65536


@pytest.mark.parametrize(
    "argv",
    [
        ["nmap", "-sS", "10.0.0.1"],
        ["hping3", "-S", "-a", "127.66.0.1", "192.168.1.20"],
        ["hydra", "ssh://203.0.113.7:22"],
        ["ncrack", "mqtt://example.org:1883"],
        ["nmap", "--target=8.8.8.8"],
        ["nmap", "-6", "[::1]"],
        ["nmap", "fe80::1"],
    ],
)
def test_command_lines_naming_other_addresses_are_refused(argv: list[str]) -> None:
    with pytest.raises(UnsafeTargetError):
        check_argv(argv)


def test_topology_refuses_a_role_outside_loopback() -> None:
    with pytest.raises(UnsafeTargetError):
        Topology(services=IPv4Address("10.20.0.1"))
    with pytest.raises(UnsafeTargetError):
        Topology(sensors=(IPv4Address("127.10.0.1"), IPv4Address("192.168.0.10")))
    assert "net 127.66.0.0/16" in Topology().capture_filter()


@pytest.mark.parametrize("scenario", ATTACKS, ids=lambda s: s.name)
@pytest.mark.parametrize("wanted", [1, 300, 20_000, 10**9])
def test_every_attack_run_is_loopback_only_and_bounded(
    scenario: object, wanted: int, tmp_path: Path
) -> None:
    from amlhp.lab.scenarios import Scenario

    assert isinstance(scenario, Scenario)
    topology = Topology()
    ctx = AttackContext(topology, tmp_path, random.Random(7), 0, time_left_s=42.0, seed=7)
    run = scenario.next_run(ctx, wanted)
    check_argv(run.argv)  # raises if anything outside 127.0.0.0/8 is named
    assert str(scenario.target_address(topology)) in " ".join(run.argv)
    assert 0 < run.timeout_s <= 42.0 + 5
    tool = Path(run.argv[0]).name
    joined = " ".join(run.argv)
    if tool == "hping3":
        count = int(run.argv[run.argv.index("-c") + 1])
        assert 1 <= count <= 60_000
        assert "--rand-dest" not in joined
        assert "--flood" not in joined
    elif tool == "nmap":
        assert "--host-timeout" in run.argv
        assert "--max-rate" in run.argv
        assert "-S" in run.argv
        assert "-e" in run.argv
    elif tool in ("hydra", "ncrack"):
        lists = [Path(run.argv[i + 1]) for i, a in enumerate(run.argv) if a in ("-L", "-U", "-P")]
        attempts = 1
        for wordlist in lists:
            attempts *= len(wordlist.read_text().split())
        assert attempts <= len(USERS) * len(PASSWORDS)  # a small list, whatever was asked
    elif tool == "ip":  # masscan inside the lab's own namespace
        assert run.argv[1:4] == ["netns", "exec", "amlhp-lab-scan"]
        assert run.argv[4] == "masscan"
        assert int(run.argv[run.argv.index("--rate") + 1]) <= 2000
        first, last = (IPv4Address(a) for a in run.argv[run.argv.index("-p") + 2].split("-"))
        assert first in LOOPBACK_NET
        assert last in LOOPBACK_NET
        assert 0 <= int(last) - int(first) < 20_000
    elif tool == "curl":
        assert "--max-time" in run.argv
        urls = [a for a in run.argv if "://" in a]
        assert 1 <= len(urls) <= 400
    elif tool == "sh":  # the Modbus attack's mbpoll loops
        script = run.argv[2]
        assert run.argv[1] == "-c"
        assert 1 <= script.count("mbpoll") <= 200
        assert "-l 10" not in script or "timeout" in script
    elif tool in ("sqlmap", "dirb", "slowhttptest"):
        assert run.timeout_s <= 42.0 + 10
    elif "-m" in run.argv:  # the lab's own drivers
        module = run.argv[run.argv.index("-m") + 1]
        bounds = {
            "amlhp.lab.httpflood": ("--requests", 20_000),
            "amlhp.lab.dnstunnel": ("--bytes", 3_000_000),
            "amlhp.lab.revshell": ("--commands", 400),
            "amlhp.lab.beacon": ("--beacons", 5_000),
        }
        option, most = bounds[module]
        assert 1 <= int(run.argv[run.argv.index(option) + 1]) <= most
        if "--seconds" in run.argv:
            assert float(run.argv[run.argv.index("--seconds") + 1]) <= 42.0
    else:
        pytest.fail(f"no bounds check for {tool}: add one")


def test_every_scenario_names_its_attack_programs() -> None:
    from amlhp.lab.scenarios import BY_NAME, PROGRAMS
    from amlhp.lab.tools import ATTACK_PROGRAMS, SERVER_PROGRAMS, TOOLS

    assert set(PROGRAMS) == set(BY_NAME)
    used = {p for programs in PROGRAMS.values() for p in programs}
    assert used == set(ATTACK_PROGRAMS)
    assert not ATTACK_PROGRAMS & SERVER_PROGRAMS
    assert set(TOOLS) == ATTACK_PROGRAMS | SERVER_PROGRAMS


def test_a_missing_attack_tool_skips_its_scenario_with_the_package_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from amlhp.lab.runner import unavailable
    from amlhp.lab.scenarios import select

    # sqlmap lives in /usr/bin, which this PATH lacks; hping3 is found in /usr/sbin anyway
    monkeypatch.setenv("PATH", "/nonexistent")
    reasons = unavailable(select(["syn_flood", "web_sqli", "benign"]))
    if Path("/usr/sbin/hping3").exists():
        assert "syn_flood" not in reasons
    assert "benign" not in reasons
    assert reasons["web_sqli"].startswith("sqlmap not installed (Debian sqlmap;")
