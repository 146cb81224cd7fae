"""Chaos experiments through the real stack: faults set over RTDS, seen by clients via Envoy.

One stack for the module with two fake providers (`primary`, then `secondary`, both serving
model `m`), so the router's failover can be measured under provider faults. Every experiment
is created and driven through Envoy's control listener. Measured ratios are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import duration_pb2

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness import logs
from tests.harness.control import control_channel
from tests.harness.providers_stack import providers_stack
from tests.harness.waiting import eventually

pytestmark = pytest.mark.chaos

PROVIDERS = ("primary", "secondary")
CONCURRENCY = 16


@dataclass
class Chaos:
    """The stack, a client key per tenant, and clients of the gateway and fault API."""

    stack: Stack
    fakes: dict[str, ManagedProcess]
    keys: dict[str, str]

    @property
    def gateway(self) -> str:
        envoy = self.stack.config.envoy
        return f"http://{envoy.host}:{envoy.listener_port}/v1"

    @property
    def admin(self) -> str:
        envoy = self.stack.config.envoy
        return f"http://{envoy.host}:{envoy.admin_port}"

    def api(self, channel: grpc.Channel) -> fault_pb2_grpc.FaultServiceStub:
        return fault_pb2_grpc.FaultServiceStub(channel)

    def channel(self) -> grpc.Channel:
        return control_channel(self.stack)

    def run(self, request: fault_pb2.CreateExperimentRequest) -> fault_pb2.Experiment:
        """Create and start an experiment; returns it running."""
        with self.channel() as channel:
            api = self.api(channel)
            api.CreateExperiment(request, timeout=10)
            started = api.StartExperiment(
                fault_pb2.StartExperimentRequest(name=request.name), timeout=10
            )
        return started.experiment

    def get(self, name: str) -> fault_pb2.Experiment:
        with self.channel() as channel:
            reply = self.api(channel).GetExperiment(
                fault_pb2.GetExperimentRequest(name=name), timeout=10
            )
        return reply.experiment

    def stop(self, name: str) -> None:
        with self.channel() as channel:
            self.api(channel).StopExperiment(fault_pb2.StopExperimentRequest(name=name), timeout=10)

    def emergency_stop(self) -> list[str]:
        with self.channel() as channel:
            reply = self.api(channel).EmergencyStop(
                fault_pb2.EmergencyStopRequest(reason="test"), timeout=10
            )
        return list(reply.stopped)

    async def fault_keys(self) -> dict[str, Any]:
        """The fault keys in Envoy's runtime now."""
        async with httpx.AsyncClient(timeout=5) as client:
            entries = (await client.get(f"{self.admin}/runtime")).json()["entries"]
        return {k: v.get("final_value") for k, v in entries.items() if k.startswith("fault.")}

    async def load(
        self, count: int, tenant: str = "a", path: str = "chat/completions", **headers: str
    ) -> list[tuple[int, float]]:
        """count requests through Envoy, CONCURRENCY at a time: (status, seconds) each."""
        body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
        gate = asyncio.Semaphore(CONCURRENCY)
        auth = {"authorization": f"Bearer {self.keys[tenant]}", **headers}

        async def one(client: httpx.AsyncClient) -> tuple[int, float]:
            async with gate:
                started = time.monotonic()
                if path == "models":
                    reply = await client.get(f"{self.gateway}/models", headers=auth)
                else:
                    reply = await client.post(f"{self.gateway}/{path}", json=body, headers=auth)
                return reply.status_code, time.monotonic() - started

        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(*(one(client) for _ in range(count)))


def experiment(
    name: str,
    target: fault_pb2.Target,
    *faults: fault_pb2.Fault,
    severity: int = fault_pb2.SEVERITY_HIGH,
    **fields: Any,
) -> fault_pb2.CreateExperimentRequest:
    return fault_pb2.CreateExperimentRequest(
        name=name,
        target=target,
        faults=faults,
        severity=severity,  # type: ignore[arg-type]
        duration=duration_pb2.Duration(seconds=120),
        confirm_critical=severity == fault_pb2.SEVERITY_CRITICAL,
        **fields,
    )


def abort(percent: int, status: int = 503) -> fault_pb2.Fault:
    return fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=percent, http_status=status))


def within_binomial(hits: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(hits - trials * p) <= sigmas * math.sqrt(trials * p * (1 - p))


@pytest.fixture(scope="module")
def chaos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    workdir = tmp_path_factory.mktemp("chaos-stack")
    with providers_stack(workdir, PROVIDERS, timeout_s=60) as started:
        keys = {
            t: create_key(started.stack, tenant=f"chaos-{t}", user="pytest").secret for t in "ab"
        }
        yield Chaos(started.stack, started.fakes, keys)


@pytest.fixture
async def chaos(request: pytest.FixtureRequest, chaos_stack: Chaos) -> Chaos:
    """The chaos stack with its logs on failure; every fault gone before the test."""
    logs.watch(request.node, *chaos_stack.stack.processes.values(), *chaos_stack.fakes.values())
    chaos_stack.emergency_stop()
    await eventually(chaos_stack.fault_keys, lambda keys: not keys, timeout_s=5)
    return chaos_stack


async def test_abort_and_latency_are_seen_at_their_percentage_and_go_after_stop(
    chaos: Chaos,
) -> None:
    chaos.run(experiment("abort-half", fault_pb2.Target(route="chat"), abort(50)))
    chaos.run(
        experiment(
            "slow-models",
            fault_pb2.Target(route="models"),
            fault_pb2.Fault(latency=fault_pb2.LatencyFault(percent=30, fixed_delay_ms=400)),
        )
    )
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 4, timeout_s=5)
    chats = await chaos.load(400)
    aborted = sum(status == 503 for status, _ in chats)
    assert {status for status, _ in chats} <= {200, 503}
    models = await chaos.load(200, path="models")
    slow = sum(seconds >= 0.4 for _, seconds in models)
    assert all(status == 200 for status, _ in models)
    print(f"\nchaos: abort 50% on chat -> {aborted}/400 aborted ({aborted / 400:.1%})")
    print(f"chaos: latency 30% x 400 ms on models -> {slow}/200 delayed ({slow / 200:.1%})")
    assert within_binomial(aborted, 400, 0.5)
    assert within_binomial(slow, 200, 0.3)
    chaos.stop("abort-half")
    chaos.stop("slow-models")
    await eventually(chaos.fault_keys, lambda keys: not keys, timeout_s=2)
    after = await chaos.load(100)
    assert all(status == 200 for status, _ in after)
    record = chaos.get("abort-half")
    assert record.state == fault_pb2.EXPERIMENT_STATE_STOPPED
    assert list(record.faults_applied) == ["abort"]


async def test_a_tenant_experiment_hits_only_that_tenant(chaos: Chaos) -> None:
    chaos.run(
        experiment(
            "tenant-a-down",
            fault_pb2.Target(tenant="chaos-a"),
            abort(100),
            severity=fault_pb2.SEVERITY_CRITICAL,
        )
    )
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 2, timeout_s=5)
    tenant_a = await chaos.load(40, tenant="a")
    # Tenant b claims to be tenant a: Envoy drops the client's header, authz sets the real one.
    tenant_b = await chaos.load(
        40, tenant="b", **{"x-envoy-downstream-service-cluster": "tenant-chaos-a"}
    )
    assert [s for s, _ in tenant_a] == [503] * 40
    assert [s for s, _ in tenant_b] == [200] * 40


async def test_failover_keeps_clients_served_when_the_primary_provider_fails(
    chaos: Chaos,
) -> None:
    chaos.run(experiment("primary-half", fault_pb2.Target(provider="primary"), abort(50)))
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 2, timeout_s=5)
    half = await chaos.load(300)
    chaos.stop("primary-half")
    chaos.run(
        experiment(
            "primary-down",
            fault_pb2.Target(provider="primary"),
            abort(100),
            severity=fault_pb2.SEVERITY_CRITICAL,
        )
    )
    await eventually(
        chaos.fault_keys,
        lambda keys: keys.get("fault.provider.primary.abort.abort_percent") == "100",
        timeout_s=5,
    )
    down = await chaos.load(300)
    ratio_half = sum(s == 200 for s, _ in half) / len(half)
    ratio_down = sum(s == 200 for s, _ in down) / len(down)
    print(f"\nchaos: primary provider aborting 50% -> client success {ratio_half:.2%} (300)")
    print(f"chaos: primary provider aborting 100% -> client success {ratio_down:.2%} (300)")
    assert ratio_half >= 0.99
    assert ratio_down >= 0.95


async def test_a_breached_hypothesis_rolls_the_experiment_back(chaos: Chaos) -> None:
    started = time.monotonic()
    chaos.run(
        experiment(
            "breach",
            fault_pb2.Target(route="chat"),
            abort(50),
            hypothesis=fault_pb2.SteadyStateHypothesis(min_success_ratio=0.9, min_requests=20),
        )
    )

    async def state_under_load() -> int:
        await chaos.load(40)
        return chaos.get("breach").state

    await eventually(
        state_under_load,
        lambda state: state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK,
        what="the breached experiment rolled back",
        timeout_s=20,
    )
    print(
        f"\nchaos: breached hypothesis rolled back {time.monotonic() - started:.1f} s after start"
    )
    record = chaos.get("breach")
    assert record.end_reason.startswith("success_ratio: success ratio")
    assert record.observed.requests > 0
    assert record.observed.success_ratio < 0.9
    await eventually(chaos.fault_keys, lambda keys: not keys, timeout_s=2)


async def test_emergency_stop_clears_every_fault_within_a_second(chaos: Chaos) -> None:
    chaos.run(experiment("e-chat", fault_pb2.Target(route="chat"), abort(50)))
    chaos.run(experiment("e-primary", fault_pb2.Target(provider="primary"), abort(50)))
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 4, timeout_s=5)
    started = time.monotonic()
    assert chaos.emergency_stop() == ["e-chat", "e-primary"]
    await eventually(chaos.fault_keys, lambda keys: not keys, timeout_s=1.0)
    print(f"\nchaos: emergency stop cleared Envoy's runtime in {time.monotonic() - started:.3f} s")
    assert chaos.get("e-chat").state == fault_pb2.EXPERIMENT_STATE_STOPPED
    assert all(s == 200 for s, _ in await chaos.load(50))


async def test_faults_vanish_when_the_fault_service_is_killed(chaos: Chaos) -> None:
    chaos.run(
        experiment(
            "orphan",
            fault_pb2.Target(route="chat"),
            abort(100),
            severity=fault_pb2.SEVERITY_CRITICAL,
        )
    )
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 2, timeout_s=5)
    assert [s for s, _ in await chaos.load(20)] == [503] * 20
    fault = chaos.stack.processes["fault"]
    killed = time.monotonic()
    fault.signal(signal.SIGKILL)
    ttl = chaos.stack.config.services.fault.rtds_ttl_s
    await eventually(chaos.fault_keys, lambda keys: not keys, timeout_s=ttl + 2)
    print(f"\nchaos: faults gone from Envoy {time.monotonic() - killed:.1f} s after SIGKILL")
    assert [s for s, _ in await chaos.load(20)] == [200] * 20
    # Back up, the service resumes the experiment (it has not ended) until it is stopped.
    fault.start()
    await fault.wait_ready(30)
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 2, timeout_s=10)
    assert chaos.get("orphan").state == fault_pb2.EXPERIMENT_STATE_RUNNING
    chaos.stop("orphan")
    await eventually(chaos.fault_keys, lambda keys: not keys, timeout_s=2)


async def test_a_grpc_status_abort_reaches_grpc_clients_only(chaos: Chaos) -> None:
    unavailable = fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=100, grpc_status=14))
    chaos.run(
        experiment(
            "chat-unavailable",
            fault_pb2.Target(route="chat"),
            unavailable,
            severity=fault_pb2.SEVERITY_CRITICAL,
        )
    )
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 2, timeout_s=5)
    envoy = chaos.stack.config.envoy
    async with grpc.aio.insecure_channel(f"{envoy.host}:{envoy.listener_port}") as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        request = chat_pb2.ChatRequest(
            model="m", messages=[chat_pb2.ChatMessage(role="user", content="hello")]
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Chat(
                request, metadata=(("authorization", f"Bearer {chaos.keys['a']}"),), timeout=10
            )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "fault filter abort"
    # REST clients of the same route are not touched by a gRPC-status abort.
    assert all(s == 200 for s, _ in await chaos.load(10))
    chaos.stop("chat-unavailable")


async def test_a_bandwidth_fault_throttles_responses(chaos: Chaos) -> None:
    async def throttled() -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (
                await client.get(
                    f"{chaos.admin}/stats", params={"filter": "^http.client.fault.response_rl"}
                )
            ).text
        return int(text.split(":")[1]) if ":" in text else 0

    before = await throttled()
    slow = fault_pb2.Fault(bandwidth=fault_pb2.BandwidthFault(percent=100))
    chaos.run(
        experiment(
            "thin-pipe",
            fault_pb2.Target(route="models"),
            slow,
            severity=fault_pb2.SEVERITY_CRITICAL,
        )
    )
    await eventually(chaos.fault_keys, lambda keys: len(keys) == 1, timeout_s=5)
    assert all(s == 200 for s, _ in await chaos.load(10, path="models"))
    assert await throttled() == before + 10  # Envoy throttled every one of them
    chaos.stop("thin-pipe")
