"""IoT-AMLHP streaming pipeline: packet-by-packet malicious IoT traffic classification.

The stages live in sibling packages (installed as ``amlhp.encoders``, ``amlhp.model``,
``amlhp.streams``, ``amlhp.infra``, ``amlhp.dashboards``, ``amlhp.benchmarks``). Nothing is
imported here on purpose: importing the package must stay cheap (no torch at import time).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
