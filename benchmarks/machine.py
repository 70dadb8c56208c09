"""Machine facts stored with every benchmark result, and per-process CPU time.

A figure without the machine it was taken on cannot be compared: every result JSON gets
the CPU model, the cores usable, memory, kernel and the versions of Python, torch, Kafka
(client library and broker) and the other libraries on the hot path. CPU time of the
pipeline's processes is read from ``/proc`` so that a benchmark can say which process
used the cores (broker, tap, worker, sink) and how busy the machine was with other work.
"""

from __future__ import annotations

import os
import platform
from typing import Any

from amlhp.benchmarks.encode_bench import machine_info
from amlhp.model.native_net import supported_isas

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def memory_gib() -> float | None:
    """Total memory in GiB (``/proc/meminfo``), ``None`` off Linux."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        return None
    return None


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """CPU model, cores, memory, kernel and the versions that matter for the figures."""
    facts = machine_info()  # cpu, cores_usable, python, numpy, pyarrow
    facts.update(
        {
            "cores_total": os.cpu_count(),
            "memory_gib": memory_gib(),
            "kernel": platform.release(),
            "os": platform.platform(terse=True),
            "torch": _version("torch"),
            "confluent_kafka": _version("confluent-kafka"),
            "faust_streaming": _version("faust-streaming"),
            "kafka_broker": _kafka_version(),
            "gpu": _gpu(),
            # the native scorer kernels this CPU runs, best first (the first is served)
            "native_isas": supported_isas(),
        }
    )
    try:
        import confluent_kafka

        facts["librdkafka"] = confluent_kafka.libversion()[0]
    except ImportError:
        facts["librdkafka"] = None
    return facts


def _kafka_version() -> str | None:
    """The broker version the project pins (infra/kafka/pom.xml)."""
    from amlhp.errors import AmlhpError
    from amlhp.infra.paths import default_paths

    try:
        return default_paths().kafka_version()
    except (AmlhpError, OSError, ValueError):
        return None


def _gpu() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if torch.cuda.is_available():
        return str(torch.cuda.get_device_name(0))
    return None


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (``None`` once it has gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # fields[0] is the state (3rd field of stat); utime and stime are the 14th and 15th.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores spent not idle since boot (``/proc/stat``)."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # guest time is already inside user time
    return busy / CLOCK_TICKS


def broker_pid() -> int | None:
    """The local single-node broker's process id, when this project runs it."""
    from amlhp.infra import kafka_broker
    from amlhp.infra.kafka_config import single_layout

    try:
        for node in kafka_broker.status(single_layout()):
            if node.pid is not None:
                return int(node.pid)
    except OSError:
        return None
    return None
