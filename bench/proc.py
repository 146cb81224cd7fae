"""CPU time of running processes, from /proc: what a benchmark charges to each process."""

from __future__ import annotations

import os
from pathlib import Path


def cpu_ms(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each named process has used so far, in milliseconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) * 1000 / ticks  # utime, stime
    return used
