"""What the benchmarks ran on, for their reports: architecture, cores, CPU model and Python."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or what platform knows where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def description() -> str:
    """e.g. ``x86_64, 2 cores (Intel(R) Xeon(R) Processor), Python 3.11.7``."""
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Python {platform.python_version()}"
