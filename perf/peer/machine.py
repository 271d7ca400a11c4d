"""Facts about the machine a benchmark ran on: CPU name, its file-name form, load average."""

from __future__ import annotations

import os
import re
from pathlib import Path


def cpu_name() -> str:
    """The first `model name` of /proc/cpuinfo, e.g. 'Intel(R) Xeon(R) Processor'."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("/proc/cpuinfo has no 'model name' line")


def cpu_slug(name: str) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'intel-xeon-processor' (trademark marks dropped)."""
    name = re.sub(r"\((R|TM|tm|r)\)", "", name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def load_average() -> dict[str, float]:
    one, five, fifteen = os.getloadavg()
    return {"1min": one, "5min": five, "15min": fifteen}
