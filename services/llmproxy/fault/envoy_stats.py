"""Samples the client listener's traffic from Envoy's admin /stats, for steady-state checks.

Reads the cumulative response-class counters of the HTTP connection manager whose stat prefix is
`client` (`http.client.downstream_rq_1xx` ... `_5xx`) and the recent-interval p99 of its
`downstream_rq_time` histogram. "Recent interval" is Envoy's last stats flush interval (5 s by
default); when no request completed in it Envoy reports null, and so do we.

Requests count responses of every class; a success is any response that is not 5xx. gRPC calls
that fail with HTTP 200 and a grpc-status trailer are successes here: the OpenAI routes, which
carry the gateway's client traffic, answer errors with real HTTP statuses.

Errors: StatsUnavailable when Envoy cannot be reached or answers something unexpected; callers
treat it as "cannot judge", never as a breach.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from llmproxy.common.errors import LlmproxyError

STAT_PREFIX = "http.client."
_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_TIME = f"{STAT_PREFIX}downstream_rq_time"
# Envoy's admin regex filter keeps the answer a few hundred bytes instead of thousands of stats.
_FILTER = r"^http\.client\.downstream_rq_([1-5]xx|time)$"
_P99 = 99.0


class StatsUnavailable(LlmproxyError):
    """Envoy's admin stats could not be read or understood: no judgement is possible."""


@dataclass(frozen=True)
class TrafficSample:
    """Cumulative client-listener counters at one moment, and the recent p99 latency."""

    taken_at: float
    """time.monotonic() when the sample was taken."""
    requests: int
    """Completed downstream requests on the client listener (cumulative)."""
    successes: int
    """Of which not 5xx (cumulative)."""
    p99_ms: float | None
    """Envoy's recent-interval p99 of downstream_rq_time in ms; None if no data."""


async def sample_traffic(admin_url: str, client: httpx.AsyncClient) -> TrafficSample:
    """Read one TrafficSample from the Envoy admin at admin_url (e.g. http://127.0.0.1:9901).

    Raises StatsUnavailable when the admin cannot be reached, answers an error, or its JSON
    lacks the client listener's counters (wrong Envoy, or the listener is not configured).
    """
    url = f"{admin_url.rstrip('/')}/stats"
    try:
        reply = await client.get(url, params={"format": "json", "filter": _FILTER})
        reply.raise_for_status()
        body = reply.json()
    except httpx.HTTPError as exc:
        raise StatsUnavailable(f"cannot read Envoy stats at {url}: {exc!r}") from exc
    except ValueError as exc:
        raise StatsUnavailable(f"Envoy stats at {url} are not JSON: {exc}") from exc
    taken_at = time.monotonic()
    counters, p99 = _parse(body, url)
    missing = [c for c in _CLASSES if f"{STAT_PREFIX}downstream_rq_{c}" not in counters]
    if missing:
        raise StatsUnavailable(
            f"Envoy stats at {url} lack http.client.downstream_rq_{missing[0]}: "
            "no listener with stat prefix 'client'"
        )
    requests = sum(counters[f"{STAT_PREFIX}downstream_rq_{c}"] for c in _CLASSES)
    errors = counters[f"{STAT_PREFIX}downstream_rq_5xx"]
    return TrafficSample(taken_at, requests, requests - errors, p99)


def _parse(body: Any, url: str) -> tuple[dict[str, int], float | None]:
    """The counters and the interval p99 of Envoy's /stats?format=json answer."""
    try:
        stats = body["stats"]
        counters: dict[str, int] = {}
        p99: float | None = None
        for stat in stats:
            if "histograms" in stat:
                p99 = _interval_p99(stat["histograms"], p99)
            else:
                counters[str(stat["name"])] = int(stat["value"])
    except (KeyError, TypeError, ValueError) as exc:
        raise StatsUnavailable(f"unexpected Envoy stats JSON at {url}: {exc!r}") from exc
    return counters, p99


def _interval_p99(histograms: dict[str, Any], found: float | None) -> float | None:
    quantiles = [float(q) for q in histograms["supported_quantiles"]]
    if _P99 not in quantiles:
        return found
    index = quantiles.index(_P99)
    for histogram in histograms.get("computed_quantiles", []):
        if histogram["name"] == _TIME:
            value = histogram["values"][index]["interval"]
            return None if value is None else float(value)
    return found
