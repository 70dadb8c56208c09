"""Helpers that only the tests use, kept out of the installed package.

Imported as ``tests.support.<name>`` (``pythonpath = ["."]`` in ``pyproject.toml``):
``synth`` builds packets and capture files byte by byte, ``synthetic`` makes verdict rows,
``kafka`` holds the types the broker fixtures hand out and strict produce/consume helpers,
``lab`` makes the lab tests' short real lab runs.
"""
