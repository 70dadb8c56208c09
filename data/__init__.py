"""The committed demo captures, installed as package data (``amlhp.data``).

``data/`` is installed as the package ``amlhp.data`` (see ``pyproject.toml``) so that an
installed ``amlhp demo`` finds its capture without a checkout. Each capture is named here
once; everything else imports these paths. What each holds and how it was built is beside
it: ``lab-demo.manifest.json`` and ``demo.json``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def _demo_file(name: str) -> Path:
    """A file of ``data/demo`` as a real path (the package is always installed unzipped)."""
    return Path(str(resources.files(__name__).joinpath("demo", name)))


#: The attack lab's capture that ``amlhp demo`` replays (all 23 lab classes: 22 attacks and
#: benign; docs/lab.md);
#: its manifest is ``DEMO_CAPTURE.with_suffix(".manifest.json")``.
DEMO_CAPTURE: Path = _demo_file("lab-demo.pcap")
#: The older mix of the public captures that the benchmarks replay (see ``demo.json``).
BENCH_CAPTURE: Path = _demo_file("demo.pcap")
