"""What every benchmark reports beside its figures: the machine, and where the shared data set lives."""

from __future__ import annotations

import platform
from pathlib import Path

# ../shared beside the checkout (the development machines' layout); benchmarks take --data to override.
CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-subset"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else whatever platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
