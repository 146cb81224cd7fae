"""Severity caps: the largest share of traffic and the longest run each severity allows.

| severity | max percent | max duration |
|---|---|---|
| LOW      | 10%  | 5 min  |
| MEDIUM   | 25%  | 15 min |
| HIGH     | 50%  | 30 min |
| CRITICAL | 100% | 60 min (and confirm_critical must be set) |

A CPU fault's share of one core counts as its percentage (0.3 cores = 30%).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmproxy._gen.fault.v1 import fault_pb2


@dataclass(frozen=True)
class Cap:
    """The blast radius one severity allows."""

    max_percent: float
    max_duration_s: float


CAPS: dict[int, Cap] = {
    fault_pb2.SEVERITY_LOW: Cap(10.0, 5 * 60),
    fault_pb2.SEVERITY_MEDIUM: Cap(25.0, 15 * 60),
    fault_pb2.SEVERITY_HIGH: Cap(50.0, 30 * 60),
    fault_pb2.SEVERITY_CRITICAL: Cap(100.0, 60 * 60),
}


def severity_name(severity: int) -> str:
    """SEVERITY_HIGH -> "HIGH"."""
    return fault_pb2.Severity.Name(severity).removeprefix("SEVERITY_")  # type: ignore[arg-type]
