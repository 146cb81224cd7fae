"""Parsing Envoy's /stats JSON into a TrafficSample, and the errors for answers we cannot use."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmproxy.fault.envoy_stats import StatsUnavailable, sample_traffic

QUANTILES = [0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100]


def stats_json(p99_interval: float | None, **counts: int) -> dict[str, Any]:
    """The shape Envoy 1.40 answers to /stats?format=json&filter=... (checked on a real one)."""
    stats: list[dict[str, Any]] = [
        {"name": f"http.client.downstream_rq_{c}", "value": counts.get(f"rq_{c}", 0)}
        for c in ("1xx", "2xx", "3xx", "4xx", "5xx")
    ]
    values = [{"cumulative": 1.0, "interval": None} for _ in QUANTILES]
    values[QUANTILES.index(99)] = {"cumulative": 33.5, "interval": p99_interval}
    stats.append(
        {
            "histograms": {
                "supported_quantiles": QUANTILES,
                "computed_quantiles": [
                    {"name": "http.client.downstream_rq_time", "values": values}
                ],
            }
        }
    )
    return {"stats": stats}


def client_answering(handler: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_sums_response_classes_and_reads_interval_p99() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=stats_json(20.5, rq_2xx=90, rq_4xx=6, rq_5xx=4))

    async with client_answering(handler) as client:
        sample = await sample_traffic("http://envoy:9901/", client)
    assert (sample.requests, sample.successes, sample.p99_ms) == (100, 96, 20.5)
    assert seen[0].url.path == "/stats"
    assert seen[0].url.params["format"] == "json"
    assert "downstream_rq_" in seen[0].url.params["filter"]


async def test_no_interval_data_gives_no_p99() -> None:
    async with client_answering(lambda _: httpx.Response(200, json=stats_json(None))) as client:
        assert (await sample_traffic("http://envoy:9901", client)).p99_ms is None


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(503, text="no"), "cannot read Envoy stats"),
        (httpx.Response(200, text="<html>"), "not JSON"),
        (httpx.Response(200, json={"stats": [{"name": "x"}]}), "unexpected Envoy stats JSON"),
        (httpx.Response(200, json={"nope": 1}), "unexpected Envoy stats JSON"),
        (httpx.Response(200, json={"stats": []}), "no listener with stat prefix 'client'"),
    ],
)
async def test_unusable_answers_raise_stats_unavailable(
    response: httpx.Response, message: str
) -> None:
    async with client_answering(lambda _: response) as client:
        with pytest.raises(StatsUnavailable, match=message):
            await sample_traffic("http://envoy:9901", client)


async def test_connection_errors_raise_stats_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with client_answering(refuse) as client:
        with pytest.raises(StatsUnavailable, match="cannot read Envoy stats at http://envoy"):
            await sample_traffic("http://envoy:9901", client)
