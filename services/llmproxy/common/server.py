"""Server bootstrap every service shares: gRPC health, reflection, metrics, graceful shutdown."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import NamedTuple

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from redis.exceptions import RedisError

from llmproxy.common.access_control import AccessControl
from llmproxy.common.chaos import agent as chaos_agent
from llmproxy.common.chaos.registry import (
    Instance,
    InstanceRegistry,
    advertised_host,
    heartbeat,
    new_instance_id,
)
from llmproxy.common.component_health import ComponentHealth
from llmproxy.common.errors import ConfigError, exit_on_config_error
from llmproxy.common.logging import configure_logging
from llmproxy.common.metrics import MetricsInterceptor, start_metrics_server
from llmproxy.common.redis import AnyRedis, connect_redis
from llmproxy.common.settings import RedisSettings, ServiceSettings
from llmproxy.common.tracing import configure_tracing, server_interceptors, shutdown_tracing
from llmproxy.config import StackConfig, load_config

log = logging.getLogger(__name__)

# A servicer registers itself on the server and returns the full names of its services.
Registrar = Callable[[grpc.aio.Server], Sequence[str]]

_SERVER_OPTIONS = [
    ("grpc.so_reuseport", 0),  # a second instance on the same port must fail, not share it
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


Closer = Callable[[], Awaitable[None]]


async def close_all(closers: Sequence[Closer]) -> None:
    """Run every closer in order, each even if one before it failed; then raise the first error.

    One resource failing to close (a goodbye to a restarted peer, say) must not leave the
    others (Redis pools, HTTP sessions) open past the event loop. Each failure is logged.
    """
    first: Exception | None = None
    for close in closers:
        try:
            await close()
        except Exception as exc:  # the next closers still run; the first error is raised
            log.exception("closing failed", extra={"closer": getattr(close, "__qualname__", "?")})
            first = first or exc
    if first is not None:
        raise first


def cancelling(tasks: Sequence[asyncio.Task[None]]) -> Closer:
    """A closer that cancels the tasks (those in the list when it runs) and waits for them."""

    async def close() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    return close


class RunningServer(NamedTuple):
    """A started gRPC server, its bound port, its health (overall and per component) and what
    to close after it."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    components: ComponentHealth
    closers: tuple[Closer, ...] = ()

    async def stop(self, grace_s: float | None) -> None:
        """Stop serving (in-flight RPCs get grace_s), then close the service's resources."""
        try:
            await self.server.stop(grace_s)
        finally:
            # Even when grpc's shutdown fails: an unclosed Redis client would outlive its loop.
            await close_all(self.closers)


async def start_server(
    settings: ServiceSettings,
    register: Registrar,
    closers: Sequence[Closer] = (),
    *,
    service: str = "service",
    required: Collection[str] = (),
    access: AccessControl,
    redis: AnyRedis | None = None,
) -> RunningServer:
    """Start a gRPC server with the registered services, health and reflection.

    access guards every RPC (see llmproxy.common.access_control): it runs inside the metrics
    interceptor, so that refused calls are counted with their status code.

    Every registered service, and the overall "" service, is reported SERVING once it listens;
    a required component (see ComponentHealth) turns them NOT_SERVING while it is unhealthy.

    With redis, the instance registers itself in the instance registry (common.chaos.registry)
    while it serves, so that kill_instance faults can find its chaos agent.
    """
    server = grpc.aio.server(
        interceptors=[*server_interceptors(), MetricsInterceptor(), access.interceptor],
        options=_SERVER_OPTIONS,
    )
    names = list(register(server))
    # Every service runs the chaos agent, on its own port (see llmproxy.common.chaos.agent).
    chaos, agent = chaos_agent.add_chaos_agent(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [
            *names,
            chaos_agent.SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    port = server.add_insecure_port(f"{settings.listen_host}:{settings.grpc_port}")
    await server.start()
    for name in ["", *names]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    components = ComponentHealth(health, service, names, required)
    registered: list[asyncio.Task[None]] = []
    if redis is not None:
        agent.identity = Instance(
            service,
            new_instance_id(service),
            f"{advertised_host(settings.host)}:{port}",
            os.getpid(),
        )
        registry = InstanceRegistry(redis)
        registered.append(asyncio.create_task(heartbeat(registry, agent.identity)))
    # Closing the chaos engine undoes any stress left: none outlives the server. The registry
    # entry goes first, while the service's Redis client is still open.
    return RunningServer(
        server,
        port,
        health,
        components,
        (cancelling(registered), components.aclose, *closers, chaos.close, *access.closers),
    )


async def serve_until_signalled(running: RunningServer, grace_s: float) -> None:
    """Serve until SIGTERM or SIGINT, then report NOT_SERVING and let in-flight RPCs finish."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": grace_s})
    await running.health.enter_graceful_shutdown()
    await running.stop(grace_s)
    log.info("stopped")


async def require_redis(settings: RedisSettings) -> None:
    """Raise ConfigError naming redis.url unless its Redis answers PING.

    A service that starts without its Redis would run degraded from its first request, which
    an operator who mistyped the URL would only learn from the RedisDown alert.
    """
    client = connect_redis(settings)
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        raise ConfigError(
            f"redis.url: no Redis answers at {settings.url} ({exc}); start it first, or set "
            "redis.degraded_start: true to start without it"
        ) from exc
    finally:
        await client.aclose()


def run_service(
    name: str,
    settings_of: Callable[[StackConfig], ServiceSettings],
    serve: Callable[[StackConfig], Awaitable[RunningServer]],
    argv: Sequence[str] | None = None,
) -> None:
    """Entry point of a service process: load config, start metrics and gRPC, run to SIGTERM.

    An invalid configuration, found at load or while the service starts (a limits file, a
    secret), exits with status 2 and a message naming what is wrong.
    """
    parser = argparse.ArgumentParser(prog=f"python -m llmproxy.{name}")
    parser.add_argument("--config", help="configuration file (default: $LLMPROXY_CONFIG)")
    parser.add_argument(
        "--instance",
        type=int,
        default=0,
        help="which of the service's `instances` this process is (its ports: grpc_port + "
        "instance * port_step); 0, the default, in a pod of its own",
    )
    args = parser.parse_args(argv)
    with exit_on_config_error(f"llmproxy.{name}"):
        config = load_config(args.config, os.environ).for_instance(name, args.instance)
    configure_logging(name, config.log_level)
    configure_tracing(name, config.tracing)
    settings = settings_of(config)

    async def main() -> None:
        metrics_port = start_metrics_server(settings.listen_host, settings.metrics_port)
        running = await serve(config)
        if not config.redis.degraded_start:
            try:
                await require_redis(config.redis)
            except ConfigError:
                await running.stop(0)
                raise
        # What startup built (modules, classes, configuration) lives as long as the process:
        # out of the garbage collector's sight, every full collection under load is shorter
        # (its pauses stall the loop; Envoy gives a rate limit call 100 ms). No collection
        # first: it would stall the just-started server to free a few dozen objects.
        gc.freeze()
        log.info(
            "serving",
            extra={"grpc_port": running.port, "metrics_port": metrics_port, "host": settings.host},
        )
        await serve_until_signalled(running, settings.shutdown_grace_s)

    try:
        with exit_on_config_error(f"llmproxy.{name}"):
            uvloop.run(main())
    finally:
        shutdown_tracing()  # the last spans (shutdown included) reach the collector
