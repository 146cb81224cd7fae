"""Two fault service processes over one Redis: one leads, the other serves the same faults, and
takes a running experiment over when the leader is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import yaml
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2, rtds_pb2_grpc
from google.protobuf import duration_pb2
from google.protobuf.json_format import MessageToDict

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.contract import RTDS_RESOURCE
from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from llmproxy.devstack.freeports import with_free_ports
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.fault.lease import Holder, slot_key
from llmproxy.fault.runtime import TYPE_URL
from tests.harness import logs
from tests.harness.redis_server import own_redis
from tests.harness.services import admin_channel
from tests.harness.waiting import eventually

LEASE_S = 2.0


@dataclass
class Fleet:
    """Two fault processes, their targets and a client of their Redis."""

    config: StackConfig
    processes: list[ManagedProcess]
    targets: list[str]
    redis: aioredis.Redis

    async def leader(self) -> Holder | None:
        value = await self.redis.get(slot_key(self.config.services.fault.key_prefix, "leader"))
        return None if value is None else Holder.parse(value)

    def index(self, holder: Holder) -> int:
        return self.targets.index(holder.address)


async def fault_keys(target: str) -> dict[str, Any]:
    """The fault layer one instance serves to an Envoy now."""
    async with grpc.aio.insecure_channel(target) as channel:
        reply = await rtds_pb2_grpc.RuntimeDiscoveryServiceStub(channel).FetchRuntime(
            discovery_pb2.DiscoveryRequest(type_url=TYPE_URL, resource_names=[RTDS_RESOURCE]),
            timeout=5,
        )
    wrapped = discovery_pb2.Resource()  # with its TTL
    assert reply.resources[0].Unpack(wrapped)
    runtime = rtds_pb2.Runtime()
    assert wrapped.resource.Unpack(runtime)
    layer: dict[str, Any] = MessageToDict(runtime.layer)
    return layer


@pytest.fixture
async def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    async with own_redis(tmp_path, request) as (url, _redis):
        data = yaml.safe_load(DEFAULT_CONFIG.read_text())
        data.setdefault("services", {}).setdefault("fault", {}).update(
            instances=2, lease_s=LEASE_S, follow_interval_s=0.2
        )
        data = with_free_ports(data)
        data["redis"]["url"] = url
        path = tmp_path / "llmproxy.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path, environ={})
        settings = config.services.fault
        targets = [f"{s.host}:{s.grpc_port}" for s in settings.all_instances()]
        processes = [
            ManagedProcess(
                f"fault-{i}",
                [sys.executable, "-m", "llmproxy.fault", "--config", str(path)]
                + (["--instance", str(i)] if i else []),
                tmp_path / f"fault-{i}.log",
                partial(grpc_serving, target),
                dict(os.environ),
            )
            for i, target in enumerate(targets)
        ]
        logs.watch(request.node, *processes)
        client = aioredis.Redis.from_url(url)
        try:
            for process in processes:
                process.start()
            for process in processes:
                await process.wait_ready(30)
            yield Fleet(config, processes, targets, client)
        finally:
            for process in processes:
                process.stop()
            await client.aclose()


async def test_the_follower_takes_a_running_experiment_over_when_the_leader_is_killed(
    fleet: Fleet,
) -> None:
    leader = await eventually(fleet.leader, what="a leader elected", timeout_s=LEASE_S + 2)
    assert leader is not None
    old = fleet.index(leader)
    survivor = 1 - old
    async with admin_channel(fleet.targets[survivor]) as channel:
        api = fault_pb2_grpc.FaultServiceStub(channel)
        await api.CreateExperiment(
            fault_pb2.CreateExperimentRequest(
                name="outlives-its-leader",
                target=fault_pb2.Target(route="chat"),
                faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=50, http_status=503))],
                severity=fault_pb2.SEVERITY_HIGH,
                duration=duration_pb2.Duration(seconds=8),
            )
        )
        # Started on the follower: forwarded to the leader, which runs it.
        started = (
            await api.StartExperiment(fault_pb2.StartExperimentRequest(name="outlives-its-leader"))
        ).experiment
        assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING
        key = "fault.route.chat.abort.abort_percent"
        for target in fleet.targets:  # both serve it, whichever one an Envoy asks
            await eventually(partial(fault_keys, target), lambda k: k.get(key) == 50, timeout_s=3)

        fleet.processes[old].signal(signal.SIGKILL)
        killed = time.monotonic()
        new = await eventually(
            fleet.leader,
            lambda h: h is not None and h.address == fleet.targets[survivor],
            what="the survivor took the lease",
            timeout_s=LEASE_S + 2,
        )
        took = time.monotonic() - killed
        print(f"\nfault failover: survivor leads {took:.2f} s after SIGKILL (lease_s {LEASE_S})")
        assert took <= LEASE_S + LEASE_S / 3 + 0.5  # the lease, and at most one round
        assert new is not None
        assert new.token > leader.token
        # The experiment goes on with its recorded deadline: never left without an owner.
        record = (
            await api.GetExperiment(fault_pb2.GetExperimentRequest(name="outlives-its-leader"))
        ).experiment
        assert record.state == fault_pb2.EXPERIMENT_STATE_RUNNING
        assert record.ended_at == started.ended_at
        assert (await fault_keys(fleet.targets[survivor])).get(key) == 50
        # The new leader ends it at that deadline, and the fault goes with it.
        done = await eventually(
            lambda: api.GetExperiment(fault_pb2.GetExperimentRequest(name="outlives-its-leader")),
            lambda r: r.experiment.state == fault_pb2.EXPERIMENT_STATE_COMPLETED,
            what="the experiment completed by the new leader",
            timeout_s=12,
        )
        assert done.experiment.end_reason == "completed"
        assert abs(done.experiment.ended_at.ToSeconds() - started.ended_at.ToSeconds()) <= 1
        assert await fault_keys(fleet.targets[survivor]) == {}
