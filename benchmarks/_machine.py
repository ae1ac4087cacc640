"""What every benchmark prints next to its tables: the CPU it ran on and the load average.

Imported by the benchmark scripts (run from the repository root as ``python benchmarks/bench_*.py``,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform`` when that is unreadable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``"0.84 1.29 1.51"`` (``"n/a"`` where unavailable)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
