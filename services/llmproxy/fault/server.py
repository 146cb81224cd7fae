"""Wires the fault service: lease, Redis store, controller, runner, the API and Envoy's RTDS.

Every instance serves the API and RTDS; the lease (leadership.py) decides which one runs
experiments. The lease, and so the store's fenced writes, start once the server listens: its
address is what followers forward to.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid

import grpc
import httpx
from envoy.service.runtime.v3 import rtds_pb2_grpc

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.access_control import access_control
from llmproxy.common.chaos.registry import InstanceRegistry, advertised_host
from llmproxy.common.contract import CLIENT_ROUTES, SERVICES
from llmproxy.common.net import is_ip
from llmproxy.common.redis import REDIS_CHECK_INTERVAL_S, connect_redis
from llmproxy.common.server import RunningServer, cancelling, start_server
from llmproxy.config import StackConfig
from llmproxy.fault.agents import Agents, GrpcSend
from llmproxy.fault.controller import Controller
from llmproxy.fault.envoy_stats import TrafficSample, sample_traffic
from llmproxy.fault.forward import LeaderForwarder
from llmproxy.fault.kill import Killer
from llmproxy.fault.leadership import Leadership
from llmproxy.fault.lease import Lease
from llmproxy.fault.redis_pause import RedisPauser, slice_s
from llmproxy.fault.rtds import SERVICE_NAME as RTDS_SERVICE_NAME
from llmproxy.fault.rtds import RuntimeDiscoveryServicer
from llmproxy.fault.runner import Runner
from llmproxy.fault.service import FaultServicer
from llmproxy.fault.store import RedisExperimentStore
from llmproxy.fault.validation import Known
from llmproxy.fault.view import FaultView

SERVICE_NAMES = (
    fault_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name,
    RTDS_SERVICE_NAME,
)
STATS_TIMEOUT_S = 1.0


def known_targets(config: StackConfig, environ: dict[str, str]) -> Known:
    """The route, provider and service names experiments may target."""
    return Known(
        routes=tuple(CLIENT_ROUTES),
        providers=tuple(p.name for p in config.provider_endpoints(environ)),
        services=SERVICES,
        bandwidth_kbps=config.services.fault.bandwidth_kbps,
        redis_cluster=config.redis.cluster,
    )


async def serve(config: StackConfig) -> RunningServer:
    """Start the fault gRPC server and its runner."""
    settings = config.services.fault
    redis = connect_redis(config.redis.model_copy(update={"retries": 1}))
    # First: a missing service token stops startup before anything else is opened.
    access = access_control(config, redis, service="fault")
    # The address is known once the server listens (port 0 in tests): set below.
    lease = Lease(
        redis,
        settings.key_prefix,
        holder=uuid.uuid4().hex[:16],
        address="",
        lease_s=settings.lease_s,
    )
    store = RedisExperimentStore(redis, settings.key_prefix, lease)
    registry = InstanceRegistry(redis)
    agents = Agents(registry, GrpcSend(settings.agent_timeout_s, access.service_token))
    killer = Killer(registry, settings.agent_timeout_s, access.service_token)
    # Its own connection: a pause slice holds its calls for up to a slice.
    pause_slice_s = slice_s(settings.lease_s)
    pause_redis = connect_redis(
        config.redis.model_copy(update={"retries": 0, "socket_timeout_s": 3 * pause_slice_s + 2})
    )
    pauser = RedisPauser(pause_redis, lease, pause_slice_s)
    controller = Controller(
        store,
        known_targets(config, dict(os.environ)),
        agents,
        time.time,
        lease=lease,
        killer=killer,
        pauser=pauser,
    )
    http = httpx.AsyncClient(timeout=STATS_TIMEOUT_S)
    admin_url = f"http://{config.envoy.host}:{config.envoy.admin_port}"

    async def sampler() -> TrafficSample:
        return await sample_traffic(admin_url, http)

    runner = Runner(controller, sampler, time.time, settings.tick_s, settings.hypothesis_interval_s)
    view = FaultView(controller, store, stale_after_s=settings.lease_s)
    rtds = RuntimeDiscoveryServicer(view, settings.rtds_ttl_s, settings.rtds_heartbeat_s)
    forwarder = LeaderForwarder(lease, timeout_s=10.0)
    tasks: list[asyncio.Task[None]] = []

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        servicer = FaultServicer(controller, forwarder, view)
        fault_pb2_grpc.add_FaultServiceServicer_to_server(servicer, server)
        rtds_pb2_grpc.add_RuntimeDiscoveryServiceServicer_to_server(rtds, server)
        return SERVICE_NAMES

    # The lease goes first (released while Redis is open), the pauser's connection last.
    closers = [
        cancelling(tasks),
        forwarder.aclose,
        http.aclose,
        store.aclose,
        pauser.stop,  # Redis answers again; the next leader resumes the pauses
        pause_redis.aclose,
    ]
    running = await start_server(
        settings,
        register,
        closers=closers,
        service="fault",
        access=access,
        redis=redis,
    )
    # Reported only: the emergency stop and the experiments already pushed keep working.
    await running.components.watch(
        "redis", redis.ping, REDIS_CHECK_INTERVAL_S, config.redis.socket_timeout_s
    )
    host = advertised_host(settings.host)
    lease.address = f"{host}:{running.port}"
    # A lease held at this address is a dead predecessor's, if the address is one socket's.
    lease.reclaim_own_address = is_ip(host)
    # Reported only: llmproxy.fault.leader is SERVING on the leader, NOT_SERVING elsewhere.
    leadership = Leadership(lease, functools.partial(running.components.set, "leader"))
    await leadership.round()  # a lone instance leads from its first moment
    tasks.append(asyncio.create_task(leadership.run()))
    tasks.append(asyncio.create_task(view.follow(settings.follow_interval_s)))
    tasks.append(asyncio.create_task(runner.run()))
    return running
