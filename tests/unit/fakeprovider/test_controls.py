"""The control routes: knobs over HTTP, stats, and health."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningProvider


async def test_health_is_ok(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_knobs_update_is_partial_and_shared(
    http: httpx.AsyncClient, provider: RunningProvider
) -> None:
    response = await http.put("/_fake/knobs", json={"latency_ms": 5, "error_status": 502})

    assert response.status_code == 200
    assert response.json()["latency_ms"] == 5
    assert (await http.get("/_fake/knobs")).json() == response.json()
    assert provider.knobs.error_status == 502


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"error_rate": 3}', "error_rate"),
        (b'{"outage": "sometimes"}', "outage"),
        (b'{"latency_ms": 10, "colour": "red"}', "colour"),
        (b'{"seed": "7"}', "seed"),
        (b"[1, 2]", "object"),
        (b"{not json", "JSON"),
    ],
)
async def test_bad_knob_update_is_rejected_and_changes_nothing(
    http: httpx.AsyncClient, content: bytes, field: str
) -> None:
    before = (await http.get("/_fake/knobs")).json()

    response = await http.put(
        "/_fake/knobs", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert field in response.json()["error"]["message"]
    assert (await http.get("/_fake/knobs")).json() == before


async def test_stats_count_requests_faults_and_credentials(http: httpx.AsyncClient) -> None:
    await http.get("/v1/models", headers={"authorization": "Bearer sk-secret"})
    await http.get("/v1/models")
    await http.put("/_fake/knobs", json={"outage": "503"})
    await http.post("/v1/embeddings", json={"model": "fake-embed", "input": "x"})

    stats = (await http.get("/_fake/stats")).json()

    assert stats["requests"] == {"/v1/models": 2, "/v1/embeddings": 1}
    assert stats["injected_errors"] == {"outage_503": 1}
    assert stats["injected_errors_total"] == 1
    assert stats["requests_with_credentials"] == 1
    assert "sk-secret" not in str(stats)


async def test_stats_reset(http: httpx.AsyncClient) -> None:
    await http.get("/v1/models")

    reset = await http.post("/_fake/stats/reset")

    assert reset.status_code == 200
    assert (await http.get("/_fake/stats")).json() == {
        "requests": {},
        "injected_errors": {},
        "injected_errors_total": 0,
        "requests_with_credentials": 0,
    }
