"""Placeholder being filled in this change (scenarios of the second round)."""

from __future__ import annotations

from amlhp.lab.scenario import Scenario

WEB_SCENARIOS: tuple[Scenario, ...] = ()
