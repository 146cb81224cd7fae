"""The chaos agent inside a real service process: CPU time and RSS rise, then fall at expiry."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.ratelimit import server as ratelimit_server
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.ports import free_port
from tests.harness.services import admin_channel, served
from tests.harness.waiting import eventually

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class Service:
    """A running service process and a stub of its chaos agent."""

    def __init__(
        self,
        process: ManagedProcess,
        agent: agent_pb2_grpc.ChaosAgentServiceAsyncStub,
        channel: grpc.aio.Channel,
        metrics_url: str,
    ) -> None:
        self.process = process
        self.agent = agent
        self.channel = channel
        self.metrics_url = metrics_url

    @property
    def pid(self) -> int:
        assert self.process.pid is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far, from /proc/<pid>/stat."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    async def cpu_over(self, window_s: float) -> float:
        """CPU seconds the process used in the next window_s.

        The wait is the measurement itself (a rate over a window), not a wait for an event.
        """
        start = self.cpu_seconds()
        await asyncio.sleep(window_s)
        return self.cpu_seconds() - start

    async def stress_names(self) -> list[str]:
        reply = await self.agent.GetStress(agent_pb2.GetStressRequest(), timeout=5)
        return [s.experiment for s in reply.stresses]


@pytest.fixture
async def service(
    request: pytest.FixtureRequest, tmp_path: Path, redis_process: str
) -> AsyncIterator[Service]:
    """The ratelimit service as its own process, as `make up` runs it."""
    data = stack_config_data(redis={"url": redis_process})
    path, config = write_config(tmp_path, data)
    settings = config.services.ratelimit
    target = f"127.0.0.1:{settings.grpc_port}"
    process = ManagedProcess(
        "ratelimit",
        [sys.executable, "-m", "llmproxy.ratelimit", "--config", str(path)],
        tmp_path / "ratelimit.log",
        partial(grpc_serving, target),
    )
    logs.watch(request.node, process)
    process.start()
    try:
        await process.wait_ready(30)
        async with admin_channel(target) as channel:
            yield Service(
                process,
                agent_pb2_grpc.ChaosAgentServiceStub(channel),
                channel,
                f"http://127.0.0.1:{settings.metrics_port}/metrics",
            )
    finally:
        process.stop()


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


async def test_cpu_stress_burns_cpu_until_it_expires(service: Service) -> None:
    idle = await service.cpu_over(1.0)
    reply = await service.agent.ApplyStress(
        agent_pb2.ApplyStressRequest(
            experiment="burn", cpu=agent_pb2.CpuStress(cores=0.8), duration=seconds(3)
        ),
        timeout=5,
    )
    assert reply.applied.cpu.cores == pytest.approx(0.8)
    busy = await service.cpu_over(1.5)
    async with httpx.AsyncClient(trust_env=False) as client:
        metrics = (await client.get(service.metrics_url)).text
    assert 'llmproxy_chaos_stress_active{kind="cpu"} 1.0' in metrics
    await eventually(service.stress_names, lambda names: names == [], what="expired")
    after = await service.cpu_over(1.0)
    print(
        f"CPU seconds per window: idle {idle:.3f}, stressed {busy:.3f} (1.5 s), after {after:.3f}"
    )
    # 0.8 of a core over 1.5 s is 1.2 s; the machine is shared, so ask for a quarter of it.
    assert busy > 0.3
    assert busy > 3 * idle
    assert after < 0.2  # the burner is gone: back to an idle service


async def test_memory_stress_holds_rss_until_it_expires(service: Service) -> None:
    baseline = service.rss_mb()
    await service.agent.ApplyStress(
        agent_pb2.ApplyStressRequest(
            experiment="hog", memory=agent_pb2.MemoryStress(megabytes=200), duration=seconds(2)
        ),
        timeout=10,
    )
    held = service.rss_mb()
    await eventually(service.stress_names, lambda names: names == [], what="expired")
    released = service.rss_mb()
    print(f"RSS MB: baseline {baseline:.0f}, held {held:.0f}, released {released:.0f}")
    assert held - baseline > 150
    assert released - baseline < 50


async def test_clear_stress_undoes_at_once_and_bad_input_is_refused(service: Service) -> None:
    baseline = service.rss_mb()
    await service.agent.ApplyStress(
        agent_pb2.ApplyStressRequest(
            experiment="hog", memory=agent_pb2.MemoryStress(megabytes=100), duration=seconds(600)
        ),
        timeout=10,
    )
    assert service.rss_mb() - baseline > 75
    cleared = await service.agent.ClearStress(agent_pb2.ClearStressRequest(), timeout=5)
    assert [c.experiment for c in cleared.cleared] == ["hog"]
    assert service.rss_mb() - baseline < 25
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.agent.ApplyStress(
            agent_pb2.ApplyStressRequest(
                experiment="big",
                memory=agent_pb2.MemoryStress(megabytes=50_000),
                duration=seconds(5),
            ),
            timeout=5,
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "memory.megabytes must be > 0 and <= 1024" in (raised.value.details() or "")


async def test_reflection_lists_the_agent(service: Service) -> None:
    # grpcio-reflection's stubs are typed for sync channels only.
    stub: Any = reflection_pb2_grpc.ServerReflectionStub(service.channel)  # type: ignore[arg-type]
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    async for reply in replies:
        listed = {s.name for s in reply.list_services_response.service}
        break
    assert "llmproxy.fault.v1.ChaosAgentService" in listed


async def test_server_stop_undoes_every_stress() -> None:
    environ = {
        "LLMPROXY__SERVICES__RATELIMIT__GRPC_PORT": "0",
        "LLMPROXY__REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    async with served(ratelimit_server.serve(load_config(DEFAULT_CONFIG, environ=environ))) as (
        service
    ):
        agent = agent_pb2_grpc.ChaosAgentServiceStub(service.channel)
        await agent.ApplyStress(
            agent_pb2.ApplyStressRequest(
                experiment="burn", cpu=agent_pb2.CpuStress(cores=0.1), duration=seconds(600)
            ),
            timeout=5,
        )
        assert any(t.name == "chaos-cpu-burner" for t in threading.enumerate())
    assert not any(t.name == "chaos-cpu-burner" for t in threading.enumerate())
