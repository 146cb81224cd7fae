"""Wires the fault service: Redis store, controller, runner, the API and Envoy's RTDS."""

from __future__ import annotations

import asyncio
import os
import time

import grpc
import httpx
from envoy.service.runtime.v3 import rtds_pb2_grpc

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.access_control import access_control
from llmproxy.common.contract import CLIENT_ROUTES, SERVICES
from llmproxy.common.redis import REDIS_CHECK_INTERVAL_S, connect_redis
from llmproxy.common.server import RunningServer, cancelling, start_server
from llmproxy.config import StackConfig
from llmproxy.fault.agents import Agents
from llmproxy.fault.controller import Controller
from llmproxy.fault.envoy_stats import TrafficSample, sample_traffic
from llmproxy.fault.rtds import SERVICE_NAME as RTDS_SERVICE_NAME
from llmproxy.fault.rtds import RuntimeDiscoveryServicer
from llmproxy.fault.runner import Runner
from llmproxy.fault.service import FaultServicer
from llmproxy.fault.store import RedisExperimentStore
from llmproxy.fault.validation import Known

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
    )


def agent_targets(config: StackConfig) -> dict[str, str]:
    """Each service's gRPC address, where its chaos agent answers."""
    return {
        name: f"{getattr(config.services, name).host}:{getattr(config.services, name).grpc_port}"
        for name in SERVICES
    }


async def serve(config: StackConfig) -> RunningServer:
    """Start the fault gRPC server and its runner."""
    settings = config.services.fault
    redis = connect_redis(config.redis.model_copy(update={"retries": 1}))
    # First: a missing service token stops startup before anything else is opened.
    access = access_control(config, redis, service="fault")
    store = RedisExperimentStore(redis, settings.key_prefix)
    agents = Agents(agent_targets(config), settings.agent_timeout_s, access.service_token)
    controller = Controller(store, known_targets(config, dict(os.environ)), agents, time.time)
    http = httpx.AsyncClient(timeout=STATS_TIMEOUT_S)
    admin_url = f"http://{config.envoy.host}:{config.envoy.admin_port}"

    async def sampler() -> TrafficSample:
        return await sample_traffic(admin_url, http)

    runner = Runner(controller, sampler, time.time, settings.tick_s, settings.hypothesis_interval_s)
    rtds = RuntimeDiscoveryServicer(controller, settings.rtds_ttl_s, settings.rtds_heartbeat_s)
    tasks: list[asyncio.Task[None]] = []

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        fault_pb2_grpc.add_FaultServiceServicer_to_server(FaultServicer(controller), server)
        rtds_pb2_grpc.add_RuntimeDiscoveryServiceServicer_to_server(rtds, server)
        return SERVICE_NAMES

    closers = [cancelling(tasks), agents.aclose, http.aclose, store.aclose]
    running = await start_server(
        settings,
        register,
        closers=closers,
        service="fault",
        access=access,
    )
    # Reported only: the emergency stop and the experiments already pushed keep working.
    await running.components.watch(
        "redis", redis.ping, REDIS_CHECK_INTERVAL_S, config.redis.socket_timeout_s
    )
    tasks.append(asyncio.create_task(runner.run()))
    return running
