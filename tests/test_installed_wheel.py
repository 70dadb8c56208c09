"""The project installed from its wheel (not editable) runs ``amlhp demo`` from elsewhere,
as a core install: torch cannot be imported there, and the worker serves with the native
kernel, which it builds into the home's cache from the packaged C source.

What only an editable checkout would hide: a module or a data file (demo capture, default
model, Kafka pom) that is not in the wheel, a path built from the checkout, test helpers
shipped in the package. The wheel is built offline from a copy of the working tree, and
installed into a fresh virtual environment that reuses the project environment's
dependencies through a ``.pth`` line (nothing is downloaded). The ``.pth`` files of that
site-packages are not processed, so the checkout's editable install cannot leak in.
A ``torch`` package that raises on import is put first on the path: every stage of the
demo must run without torch (``pip install amlhp`` without the ``train`` extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from amlhp.pipeline.children import child_env
from amlhp.settings import Settings

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parent.parent
#: what a fresh clone would not have (git-ignored outputs and caches)
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "var", ".cache", "out", "build", "dist", "*.egg-info", "__pycache__",
    ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".gl",
)  # fmt: skip


def run(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def build_wheel(tmp: Path) -> Path:
    """``pip wheel`` of a copy of the working tree (a stale ``build/`` cannot leak in)."""
    src = tmp / "src"
    shutil.copytree(REPO_ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    out = tmp / "wheel"
    pip_wheel = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    run([sys.executable, *pip_wheel, "-w", str(out), str(src)])
    [wheel] = out.glob("amlhp-*.whl")
    return wheel


def fresh_env(tmp: Path, wheel: Path) -> Path:
    """A new venv that sees the project's dependencies and holds only the wheel's amlhp."""
    env = tmp / "env"
    run([sys.executable, "-m", "venv", "--without-pip", str(env)])
    python = env / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    deps = Path(sysconfig.get_path("purelib"))  # the project environment's site-packages
    (Path(purelib.stdout.strip()) / "amlhp-deps.pth").write_text(f"{deps}\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    run([*pip, "--no-deps", "--no-index", str(wheel)])
    return env


def test_the_wheel_runs_the_demo_from_another_folder(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for data in (
        "amlhp/data/demo/lab-demo.pcap",
        "amlhp/model/artifacts/amlhp-default.safetensors",
        "amlhp/infra/kafka/pom.xml",
        "amlhp/pipeline/children.py",
    ):
        assert data in names
    assert not [n for n in names if n.startswith("tests/") or n.endswith("/synth.py")]

    env = fresh_env(tmp_path, wheel)
    where = tmp_path / "elsewhere"  # cwd: neither the checkout nor the home
    where.mkdir()
    home = tmp_path / "home"
    blocked = tmp_path / "no-torch" / "torch"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("a core install has no torch")\n')
    base = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    base.update(
        {
            "PYTHONPATH": str(blocked.parent),
            "PATH": f"{env / 'bin'}{os.pathsep}{base.get('PATH', '')}",
            "PYTHONNOUSERSITE": "1",
            "OMP_NUM_THREADS": "1",
        }
    )
    environ = child_env(kafka_settings.model_copy(update={"home": home}), base)

    probe = (
        "import json, amlhp, amlhp.data as d, amlhp.model.scorer as s; "
        "print(json.dumps([amlhp.__file__, str(d.DEMO_CAPTURE), str(s.DEFAULT_ARTIFACT), "
        "s.torch_installed()]))"
    )
    found = run([str(env / "bin" / "python"), "-c", probe], env=environ, cwd=where)
    *paths, has_torch = json.loads(found.stdout)
    assert has_torch is False
    for path in paths:
        assert Path(path).is_relative_to(env), path  # the wheel's files, not the checkout's

    done = run([str(env / "bin" / "amlhp"), "demo", "--timeout", "400"], env=environ, cwd=where)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["complete"] is True, summary
    assert summary["packets_in"] > 0
    assert summary["missing"] == summary["duplicates"] == 0
    # Kafka -> verdict, from the tap's publish time: the capture's own (kept) timestamps
    # are days old, and within one demo run no packet can wait longer than the run
    assert 0 < summary["latency_ms"]["p99"] < 400_000, summary["latency_ms"]
    assert Path(summary["capture"]).is_relative_to(env)  # the packaged demo capture
    assert Path(summary["verdict_dataset"]) == home / "out" / "verdicts"
    worker_log = (home / "var" / "demo" / "worker.log").read_text()
    assert "(backend native, " in worker_log, worker_log[-2000:]
    assert list((home / ".cache" / "native").glob("amlhp-*.so"))
    assert not (where / "out").exists()
    assert not (where / "var").exists()
