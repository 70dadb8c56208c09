"""The package's layers: imports only go downwards, and no stage imports another stage.

Reads every module's source (no import of the modules themselves) and checks each
``import amlhp.X`` / ``from amlhp.X import ...`` against the ranks below, the order the
README's "What is where" draws. Lazy imports inside functions count the same.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

import amlhp

#: the shared base: settings, errors, the wire format, small helpers every layer may use
BASE = {
    "__init__", "settings", "errors", "progress", "digest", "plots", "wire", "data", "context",
    "markdown", "stdio", "kafka_log",
}  # fmt: skip
#: a layer may import layers of lower rank, and itself; never another group of its rank
RANK = {
    "base": 0,
    "encoders": 1,
    "infra": 1,
    "model": 2,
    "metrics": 3,
    "pipeline": 3,
    "streams": 4,
    "flows": 4,
    "lab": 4,
    "dashboards": 4,
    "alerts": 5,  # downstream of the packet stage: its topics and sink runner
    "benchmarks": 5,  # measures the stages
    "chaos": 5,  # faults applied to the stages' processes
    "cli": 6,  # assembles every stage's commands
}


def group(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "amlhp":
        return None
    if len(parts) == 1 or parts[1] in BASE:
        return "base"
    return parts[1]


def modules() -> list[tuple[str, Path]]:
    out = []
    for info in pkgutil.walk_packages(amlhp.__path__, "amlhp."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None, info.name
        assert spec.origin is not None, info.name
        out.append((info.name, Path(spec.origin)))
    return out


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_every_group_has_a_rank() -> None:
    groups = {group(name) for name, _ in modules()}
    assert groups <= set(RANK), f"groups without a rank: {groups - set(RANK)}"
    assert {"base", "pipeline", "metrics", "streams", "flows"} <= groups


def violations(mods: list[tuple[str, Path]]) -> list[str]:
    """Every import of a module that goes sideways or up the ranks."""
    wrong = []
    for name, path in mods:
        source = group(name)
        assert source is not None
        for target_module in imported(path):
            target = group(target_module)
            if target is None or target == source:
                continue
            if RANK[target] >= RANK[source]:
                wrong.append(f"{name} imports {target_module} ({source} -> {target})")
    return sorted(wrong)


def test_imports_only_go_down_and_stages_do_not_import_each_other() -> None:
    wrong = violations(modules())
    assert not wrong, "\n".join(wrong)


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    """A lazy import of flows in a streams module, or of a stage in the wire, is refused."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from amlhp.flows.record import FlowConfig\n")
    assert len(violations([("amlhp.streams.bad", bad)])) == 1
    assert len(violations([("amlhp.wire.bad", bad)])) == 1
    assert violations([("amlhp.benchmarks.bad", bad)]) == []
