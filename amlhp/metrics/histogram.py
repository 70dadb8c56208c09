"""A Prometheus histogram fed whole NumPy arrays, one call per batch.

It exists because ``prometheus_client.Histogram.observe`` costs a lock and a bucket search
per value, and a verdict batch holds hundreds of packets whose latency and score the
pipeline observes: binning the array with ``np.searchsorted`` keeps metrics at a few
operations per Kafka message. The exposition is the same as ``Histogram``'s (the tests
compare them sample by sample).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass
class _HistogramState:
    counts: np.ndarray
    total: float = 0.0


class BulkHistogram(Collector):
    """A Prometheus histogram fed with whole NumPy arrays (one call per batch).

    ``prometheus_client.Histogram.observe`` costs a lock and a bucket search per value;
    a verdict batch holds hundreds of packets, so this one bins the array with
    ``np.searchsorted`` and adds the counts in one step.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = np.asarray(sorted(buckets), dtype=np.float64)
        self._series: dict[tuple[str, ...], _HistogramState] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, values: np.ndarray | Sequence[float], *labelvalues: str) -> None:
        """Add every value of ``values`` to the series with these label values."""
        if len(labelvalues) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {labelvalues}")
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        # le semantics: a value equal to a bound belongs to that bound's bucket.
        idx = np.searchsorted(self.bounds, arr, side="left")
        counts = np.bincount(idx, minlength=len(self.bounds) + 1)
        total = float(arr.sum())
        with self._lock:
            state = self._series.get(labelvalues)
            if state is None:
                state = _HistogramState(np.zeros(len(self.bounds) + 1, dtype=np.int64))
                self._series[labelvalues] = state
            state.counts += counts
            state.total += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterable[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(k, s.counts.copy(), s.total) for k, s in sorted(self._series.items())]
        for labels, counts, total in snapshot:
            cumulative = np.cumsum(counts)
            buckets: list[tuple[str, float]] = [
                (_le(bound), float(c))
                for bound, c in zip(self.bounds, cumulative[:-1], strict=True)
            ]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric(list(labels), buckets, total)
        return [family]


def _le(bound: float) -> str:
    return repr(float(bound))
