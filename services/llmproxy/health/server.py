"""Wires the provider health service: store, probes, monitor, the APIs and Envoy's EDS.

Health per component, as the rate limiter reports it: `llmproxy.health.redis` (and every other
service as `llmproxy.health.service.<name>`, see `components`). The overall status ("") stays
SERVING while Redis is down, on purpose: this instance still probes, keeps circuits and serves
Envoy's endpoints from memory, and NOT_SERVING would only hide that from Envoy and the router.
Each provider is also a health service name of its own (see `grpc_health`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket

import grpc
from envoy.service.endpoint.v3 import eds_pb2_grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.access_control import access_control
from llmproxy.common.contract import SERVICES
from llmproxy.common.errors import ConfigError
from llmproxy.common.redis import connect_redis
from llmproxy.common.server import RunningServer, cancelling, start_server
from llmproxy.common.settings import GRPC_BALANCED
from llmproxy.config import DEMO_PROVIDER, StackConfig
from llmproxy.health import metrics
from llmproxy.health.components import (
    Check,
    Components,
    ComponentStatus,
    grpc_service_check,
    health_component,
)
from llmproxy.health.eds import SERVICE_NAME as EDS_SERVICE_NAME
from llmproxy.health.eds import EndpointDiscoveryServicer
from llmproxy.health.fallback import FallbackHealthStore
from llmproxy.health.fleet import Fleet
from llmproxy.health.fleet_store import FleetStore
from llmproxy.health.fleet_sync import share_fleet
from llmproxy.health.grpc_health import mirror_providers
from llmproxy.health.memory_store import MemoryHealthStore
from llmproxy.health.monitor import Monitor
from llmproxy.health.probe import Prober, new_probe_client
from llmproxy.health.registry import Registry
from llmproxy.health.service import ProviderHealthServicer
from llmproxy.health.store import RedisHealthStore

SERVICE_NAMES = (
    health_pb2.DESCRIPTOR.services_by_name["ProviderHealthService"].full_name,
    EDS_SERVICE_NAME,
)
CHECKED_SERVICES = tuple(name for name in SERVICES if name != "health")  # every other one
COMPONENT_TIMEOUT_S = 1.0


def check_probe_settings(config: StackConfig) -> None:
    """Raise ConfigError if provider_probes names a provider that is not configured."""
    known = {p.name for p in config.providers} | {DEMO_PROVIDER}
    unknown = sorted(set(config.services.health.provider_probes) - known)
    if unknown:
        raise ConfigError(
            "invalid configuration: services.health.provider_probes names "
            f"unknown providers {unknown} (configured: {sorted(known)})"
        )


def instance_id() -> str:
    """This instance's name in probe results and logs."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


async def serve(config: StackConfig) -> RunningServer:
    """Start the provider health gRPC server, once the startup probes have run."""
    check_probe_settings(config)
    settings = config.services.health
    environ = os.environ
    instance = instance_id()
    registry = Registry(config.provider_endpoints(environ))
    registry.on_change(metrics.observe_status)
    for status in registry.statuses():
        metrics.observe_status(status)
    redis = connect_redis(config.redis.model_copy(update={"retries": 1}))
    # First: a missing service token stops startup before anything else is opened.
    access = access_control(config, redis, service="health")
    redis_store = RedisHealthStore(
        redis,
        settings.circuit,
        settings.key_prefix,
    )
    store = FallbackHealthStore(redis_store, MemoryHealthStore(settings.circuit))
    http = new_probe_client()
    prober = Prober(http, environ, settings.probe.timeout_s, instance)
    monitor = Monitor(registry, store, prober, settings, instance=instance)
    await monitor.start()

    channels: list[grpc.aio.Channel] = []

    checks: dict[str, Check] = {"redis": redis_store.ping}
    for name in CHECKED_SERVICES:
        service = getattr(config.services, name)
        if service.grpc_port:  # port 0 (tests) cannot be reached
            channel = grpc.aio.insecure_channel(service.grpc_target(), options=GRPC_BALANCED)
            channels.append(channel)
            checks[name] = grpc_service_check(channel, name, COMPONENT_TIMEOUT_S)
    running: RunningServer | None = None

    async def publish(component: ComponentStatus) -> None:
        if running is not None:
            await running.components.set(health_component(component.name), component.healthy)

    components = Components(checks, COMPONENT_TIMEOUT_S, on_change=publish)
    servicer = ProviderHealthServicer(registry, monitor, components)
    fleet = Fleet(instance)
    eds = EndpointDiscoveryServicer(registry, fleet)
    tasks: list[asyncio.Task[None]] = []

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        health_pb2_grpc.add_ProviderHealthServiceServicer_to_server(servicer, server)
        eds_pb2_grpc.add_EndpointDiscoveryServiceServicer_to_server(eds, server)
        return SERVICE_NAMES

    closers = [
        cancelling(tasks),
        monitor.aclose,
        http.aclose,
        *(c.close for c in channels),
        store.aclose,
    ]
    running = await start_server(
        settings,
        register,
        closers=closers,
        service="health",
        access=access,
        redis=redis,
    )
    tasks.append(asyncio.create_task(mirror_providers(registry, running.health)))
    tasks.append(asyncio.create_task(components.run(settings.components_interval_s)))
    tasks.append(asyncio.create_task(share_fleet(fleet, FleetStore(redis, settings.key_prefix))))
    return running
