"""Traffic samples of the real stack's Envoy, and the chaos agent of its real services."""

from __future__ import annotations

import asyncio

import httpx
from google.protobuf.duration_pb2 import Duration

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc
from llmproxy.devstack.stack import Stack
from llmproxy.fault.envoy_stats import TrafficSample, sample_traffic
from llmproxy.fault.hypothesis import SteadyState, judge
from tests.harness.services import admin_channel
from tests.harness.waiting import eventually

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "sample me"}]}


def admin_url(stack: Stack) -> str:
    return f"http://{stack.config.envoy.host}:{stack.config.envoy.admin_port}"


async def test_sample_counts_client_traffic_through_the_generated_config(
    stack_logs: Stack, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        before = await sample_traffic(admin_url(stack_logs), client)

        async def traffic() -> TrafficSample:
            chats = (
                client.post(f"{gateway_url}/chat/completions", json=CHAT, headers=auth_headers)
                for _ in range(20)
            )
            replies = await asyncio.gather(*chats)
            assert {r.status_code for r in replies} == {200}
            unknown = await client.post(
                f"{gateway_url}/chat/completions",
                json={**CHAT, "model": "no-such-model"},
                headers=auth_headers,
            )
            assert unknown.status_code == 404
            return await sample_traffic(admin_url(stack_logs), client)

        # Envoy computes the interval p99 at its stats flush (every 5 s): send until it has one.
        now = await eventually(traffic, lambda s: s.p99_ms is not None, timeout_s=30)
    assert now.requests - before.requests >= 21
    assert now.successes - before.successes == now.requests - before.requests  # no 5xx
    assert now.p99_ms is not None
    assert now.p99_ms > 0
    verdict = judge(SteadyState(min_success_ratio=0.99, max_p99_ms=None), before, now)
    assert verdict.ok
    assert verdict.success_ratio == 1.0


async def test_every_service_of_the_stack_runs_the_agent(stack_logs: Stack) -> None:
    services = stack_logs.config.services
    for name in ("router", "ratelimit", "authz", "health", "fault"):
        settings = getattr(services, name)
        async with admin_channel(f"{settings.host}:{settings.grpc_port}") as channel:
            agent = agent_pb2_grpc.ChaosAgentServiceStub(channel)
            applied = await agent.ApplyStress(
                agent_pb2.ApplyStressRequest(
                    experiment="e2e",
                    memory=agent_pb2.MemoryStress(megabytes=1),
                    duration=Duration(seconds=60),
                ),
                timeout=10,
            )
            assert applied.applied.memory.megabytes == 1, name
            cleared = await agent.ClearStress(agent_pb2.ClearStressRequest(), timeout=10)
            assert [c.experiment for c in cleared.cleared] == ["e2e"], name
