"""``amlhp tap --gateways N``: one process publishing as N gateways, for fleet benchmarks.

Deployments aggregate thousands of gateways, each with a tap of its own; what grows with
them is what the rest of the pipeline keeps per gateway (messages, sequence marks, alert
state, metric series). Starting thousands of tap processes on one machine would measure
process start-up instead, so one process plays them all: gateway ``<prefix>-<i>`` gets
every N-th packet of the source (packet k goes to gateway k mod N), numbers its packets
from 0 and batches them on its own, exactly as its own tap would (so a gateway with few
packets per second sends small messages, as it would in the field). The gateways share
one Kafka producer.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from amlhp.settings import Settings
from amlhp.streams.exceptions import TapError
from amlhp.streams.tap import Packet, Tap, TapStats

#: more gateways than this in one process is a mistake, not a benchmark
MAX_GATEWAYS = 100_000


def fleet_gateway_ids(prefix: str, count: int) -> list[str]:
    """The ids a fleet of ``count`` gateways publishes under (zero-padded, sortable)."""
    if not 1 <= count <= MAX_GATEWAYS:
        raise TapError(f"--gateways must be 1-{MAX_GATEWAYS:,}, got {count}")
    width = len(str(count - 1))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def fleet_packet_counts(total: int, count: int) -> list[int]:
    """How many of ``total`` packets each of ``count`` gateways gets (packet k -> k mod N)."""
    return [total // count + (1 if i < total % count else 0) for i in range(count)]


class FleetTap:
    """N gateways' taps in one process, with the interface :func:`run_tap` drives."""

    def __init__(
        self,
        settings: Settings,
        prefix: str,
        count: int,
        *,
        batch_size: int = 500,
        max_delay_ms: float = 50.0,
    ) -> None:
        from confluent_kafka import Producer

        from amlhp.pipeline.kafka_io import producer_config

        self.gateway = prefix
        self.gateways = fleet_gateway_ids(prefix, count)
        self._producer = Producer(producer_config(settings, client_id=f"amlhp-tap-{prefix}"))
        self.taps = [
            Tap(
                settings,
                gateway,
                batch_size=batch_size,
                max_delay_ms=max_delay_ms,
                producer=self._producer,
            )
            for gateway in self.gateways
        ]
        self._next = 0

    @property
    def stats(self) -> TapStats:
        """The fleet's totals (errors: the first ten)."""
        total = TapStats()
        for tap in self.taps:
            for f in fields(TapStats):
                if f.name == "errors":
                    total.errors.extend(tap.stats.errors[: 10 - len(total.errors)])
                else:
                    setattr(total, f.name, getattr(total, f.name) + getattr(tap.stats, f.name))
        return total

    def add(self, packet: Packet) -> None:
        self.taps[self._next].add(packet)
        self._next = (self._next + 1) % len(self.taps)

    def tick(self) -> None:
        for tap in self.taps:
            tap.publish_due()
        self._producer.poll(0)

    def flush(self, timeout_s: float = 120.0) -> int:
        for tap in self.taps:
            tap.publish_rest()
        return int(self._producer.flush(timeout_s))

    def close(self) -> None:
        """Nothing to record: a fleet keeps no sequence state across runs."""

    def summary(self) -> dict[str, Any]:
        return {"gateways": len(self.taps), "gateway_prefix": self.gateway}
