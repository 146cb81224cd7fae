"""Two instances of every service: losing one of each, in turn, under steady traffic costs nothing.

Its own stack with `instances: 2` for every service. A client sends chat completions at a
steady RATE_PER_S through Envoy while one instance of each service is killed with SIGKILL, in
turn (a crash: no drain, no goodbye). Every request must be answered, and with a 200: Envoy
retries the calls the dead instance held, ejects it and stops health-checking it into the
rotation (envoyconf/resilience.py). After each kill the service's surviving instance still
answers a read of its control API through Envoy's control listener.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest

from llmproxy.common.access import our_rpcs, path_of
from llmproxy.common.contract import SERVICES, service_cluster_name
from llmproxy.config import StackConfig
from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness.configs import scaled_out_data
from tests.harness.control import admin_token, call, control_target
from tests.harness.waiting import eventually

RATE_PER_S = 10
# Answers to wait for after each kill: a few seconds of traffic at RATE_PER_S.
ANSWERS_AFTER_KILL = 4 * RATE_PER_S
# One instance of each service, in this order; "-1" is the second instance's process.
KILLED = [f"{service}-1" for service in ("router", "ratelimit", "authz", "health", "fault")]
# A control call of each service that changes nothing, asked through Envoy after its kill.
READS = {
    "router": "/llmproxy.router.v1.RouterService/ListModels",
    "ratelimit": "/llmproxy.ratelimit.v1.RateLimitControlService/GetLimits",
    "authz": "/llmproxy.authz.v1.AuthzService/ListKeys",
    "health": "/llmproxy.health.v1.ProviderHealthService/ListProviders",
    "fault": "/llmproxy.fault.v1.FaultService/ListExperiments",
}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def own_stack_data() -> dict[str, Any]:
    """The stack of this module: two instances of every service."""
    return scaled_out_data(2)


@dataclass
class Traffic:
    """Chat completions sent at a steady rate; what became of each."""

    client: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    answers: list[str] = field(default_factory=list)
    sent: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def _one(self) -> None:
        try:
            reply = await self.client.post(self.url, json=CHAT, headers=self.headers)
        except httpx.HTTPError as exc:  # never answered: the worst outcome
            self.answers.append(f"no answer: {type(exc).__name__}")
            return
        if reply.status_code == 200:
            self.answers.append("200")
        else:
            self.answers.append(f"{reply.status_code} {reply.text[:200]}")

    async def run(self) -> None:
        """Send a request every 1/RATE_PER_S s, each without waiting for the ones before."""
        start = time.monotonic()
        while True:
            task = asyncio.create_task(self._one())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent / RATE_PER_S - time.monotonic()))

    async def drain(self) -> None:
        """Wait for every request sent so far to end."""
        await asyncio.gather(*self._tasks)


async def _health_flags(client: httpx.AsyncClient, config: StackConfig) -> dict[str, list[str]]:
    """Each service cluster's hosts' health flags, as Envoy's admin shows them."""
    envoy = config.envoy
    text = (await client.get(f"http://{envoy.host}:{envoy.admin_port}/clusters")).text
    flags: dict[str, list[str]] = {service_cluster_name(s): [] for s in SERVICES}
    for line in text.splitlines():
        cluster, _, rest = line.partition("::")
        if cluster in flags and "::health_flags::" in rest:
            flags[cluster].append(rest.rpartition("::")[2])
    return flags


def _one_failed(flags: list[str]) -> bool:
    """Whether one host failed its health checks and the other is healthy."""
    failed = [f for f in flags if "failed_active_hc" in f]
    return len(failed) == 1 and flags.count("healthy") == 1


def _method(path: str) -> Any:
    (found,) = [m for m in our_rpcs() if path_of(m) == path]
    return found


async def _reads_answer(stack: Stack, service: str) -> list[str]:
    """The answers to a few reads of service's control API through Envoy (both instances'
    share, had the dead one still been in the rotation)."""
    method = _method(READS[service])
    async with grpc.aio.insecure_channel(control_target(stack.config)) as channel:
        answers = [await call(channel, method, admin_token(stack)) for _ in range(6)]
    return [str(a) for a in answers if a.code != grpc.StatusCode.OK]


async def test_killing_one_instance_of_each_service_costs_no_request(own_stack: Stack) -> None:
    config = own_stack.config
    key = create_key(own_stack, tenant="scale", user="pytest", name="scale-out").secret
    url = f"http://{config.envoy.host}:{config.envoy.listener_port}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=30) as client:
        await eventually(
            lambda: _health_flags(client, config),
            lambda flags: all(f == ["healthy", "healthy"] for f in flags.values()),
            what="Envoy sees both instances of every service healthy",
            timeout_s=30,
        )
        traffic = Traffic(client, url, {"authorization": f"Bearer {key}"})
        sender = asyncio.create_task(traffic.run())
        try:
            await eventually(
                lambda: len(traffic.answers),
                lambda n: n >= ANSWERS_AFTER_KILL,
                what="steady traffic before the first kill",
                timeout_s=30,
            )
            for name in KILLED:
                service = name.rsplit("-", 1)[0]
                own_stack.processes[name].kill()
                answered = len(traffic.answers)
                await eventually(
                    lambda answered=answered: len(traffic.answers) - answered,  # type: ignore[misc]
                    lambda n: n >= ANSWERS_AFTER_KILL,
                    what=f"{ANSWERS_AFTER_KILL} answers after killing {name}",
                    timeout_s=30,
                )
                # Envoy's health checks took the dead instance out of the rotation.
                await eventually(
                    lambda: _health_flags(client, config),
                    lambda flags, service=service: _one_failed(  # type: ignore[misc]
                        flags[service_cluster_name(service)]
                    ),
                    what=f"Envoy marks {name} failed and its peer healthy",
                    timeout_s=10,
                )
                # Its surviving instance answers the control API through Envoy.
                assert await _reads_answer(own_stack, service) == [], name
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await traffic.drain()
    answers = Counter(traffic.answers)
    assert answers == {"200": traffic.sent}, answers.most_common(5)
