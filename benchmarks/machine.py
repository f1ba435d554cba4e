"""What the numbers were measured on: CPU, memory, versions, load."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@dataclass(frozen=True)
class Machine:
    date: str
    cpus: int
    cpu_model: str
    ram_bytes: int
    load_average: tuple[float, float, float]
    python: str
    packages: dict[str, str]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 0


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def describe_machine() -> Machine:
    return Machine(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpus=_cpus(),
        cpu_model=_cpu_model(),
        ram_bytes=_ram_bytes(),
        load_average=os.getloadavg(),
        python=platform.python_version(),
        packages={
            name: _package(name) for name in ("montage-vec", "polars", "pyarrow", "duckdb", "adbc-driver-postgresql")
        },
    )
