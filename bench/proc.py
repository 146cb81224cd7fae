"""CPU time of running processes, from /proc: what a benchmark charges to each process."""

from __future__ import annotations

import os
from pathlib import Path

from bench.wrk import WrkResult, run_wrk
from llmproxy.devstack.stack import Stack


def cpu_ms(pids: dict[str, int]) -> dict[str, float]:
    """CPU time (user + system) each named process has used so far, in milliseconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    used = {}
    for name, pid in pids.items():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used[name] = (int(fields[11]) + int(fields[12])) * 1000 / ticks  # utime, stime
    return used


def cpu_per_request(
    stack: Stack, url: str, body: str, seconds: float, headers: dict[str, str]
) -> tuple[WrkResult, dict[str, float]]:
    """One wrk run at 1 connection, and the CPU each process of the stack spent per request."""
    pids = {name: p.pid for name, p in stack.processes.items() if p.pid is not None}
    before = cpu_ms(pids)
    result = run_wrk(url, body, 1, seconds, headers)
    after = cpu_ms(pids)
    per_request = {
        process: round((after[process] - before[process]) / max(1, result.requests), 3)
        for process in pids
    }
    return result, {**per_request, "total": round(sum(per_request.values()), 3)}
