"""Runs wrk (a C load generator) with a POST body and reads its latency percentiles."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["content-type"] = "application/json"
{headers}
done = function(summary, latency, requests)
  io.write(string.format("JSON %d %d %d %f %f %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run measured; latencies in milliseconds."""

    connections: int
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    mean_ms: float

    def as_dict(self) -> dict[str, float]:
        """The figures, rounded for printing."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal here


def run_wrk(
    url: str, body: str, connections: int, seconds: float, headers: dict[str, str] | None = None
) -> WrkResult:
    """POST body to url from `connections` connections for `seconds`."""
    binary = shutil.which("wrk")
    if binary is None:
        raise SystemExit("wrk not found: apt-get install -y wrk")
    header_lines = "\n".join(
        f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in (headers or {}).items()
    )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(_SCRIPT.format(body=_lua_string(body), headers=header_lines))
        done = subprocess.run(
            [
                binary,
                "-t",
                str(min(2, connections)),
                "-c",
                str(connections),
                "-d",
                f"{max(1, round(seconds))}s",
                "--timeout",
                "30s",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    match = re.search(r"^JSON (\d+) (\d+) (\d+) (\S+) (\S+) (\S+) (\S+)$", done.stdout, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{done.stdout}\n{done.stderr}")
    requests, errors, duration_us = (int(match.group(i)) for i in (1, 2, 3))
    p50, p99, mean = (float(match.group(i)) / 1000 for i in (4, 5, 6))
    return WrkResult(connections, requests, errors, requests / (duration_us / 1e6), p50, p99, mean)
