"""The one typed configuration of the whole stack: a YAML file plus environment overrides.

Environment variables named `LLMPROXY__SECTION__FIELD` override the file, nested with double
underscores (`LLMPROXY__ENVOY__LISTENER_PORT=8088`, `LLMPROXY__SERVICES__ROUTER__GRPC_PORT=0`);
values are read as YAML, so numbers, booleans and JSON lists keep their types. Provider keys are
never in the file: each provider names the variable that holds its key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from llmproxy.authz.settings import AuthzSettings
from llmproxy.common.edge_settings import EdgeSettings
from llmproxy.common.errors import ConfigError
from llmproxy.common.settings import (
    ControlSettings,
    ProviderSettings,
    RedisSettings,
    ServiceSettings,
    StrictModel,
    redis_server_of,
)
from llmproxy.common.tracing_settings import TracingSettings
from llmproxy.fault.settings import FaultSettings
from llmproxy.health.settings import HealthSettings
from llmproxy.ratelimit.settings import RateLimitSettings
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings

ENV_PREFIX = "LLMPROXY__"
CONFIG_ENV = "LLMPROXY_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "llmproxy.yaml"
DEMO_PROVIDER = "demo"


class EnvoySettings(StrictModel):
    """Envoy's listeners and the limits it enforces."""

    host: str = Field("127.0.0.1", description="Address every Envoy listener binds to.")
    listener_port: int = Field(8080, ge=0, le=65535, description="Client (OpenAI API) listener.")
    control_port: int = Field(8081, ge=0, le=65535, description="Control gRPC listener.")
    admin_port: int = Field(9901, ge=0, le=65535, description="Envoy admin interface.")
    egress_port: int = Field(
        8082,
        ge=0,
        le=65535,
        description="Egress listener the router calls providers through (one cluster each).",
    )
    max_request_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body accepted."
    )
    request_timeout_s: float = Field(
        300.0, gt=0, le=3600, description="Longest a client request may take, streaming included."
    )
    concurrency: int = Field(
        2,
        ge=1,
        le=256,
        description="Envoy's worker threads (`--concurrency`), as `make up` starts it. Fewer "
        "than the machine's cores leaves CPU to the services under a flood Envoy refuses.",
    )
    ext_authz_timeout_s: float = Field(0.5, gt=0, le=10, description="Timeout of an authz check.")
    ratelimit_timeout_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="Timeout of a rate limit decision. It catches a hung limiter; a burst is "
        "shed by ratelimit_max_requests well before it (a decision that times out may have "
        "counted its hits for a request Envoy then refused).",
    )
    ext_authz_max_requests: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Most authz checks in flight from Envoy at once (the authz cluster's "
        "circuit breaker): a check beyond them fails at once, a 503 with retry-after, instead "
        "of queueing past ext_authz_timeout_s.",
    )
    ratelimit_max_requests: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Most rate limit checks in flight from Envoy at once (the ratelimit "
        "cluster's circuit breaker): a check beyond them fails, and the request is refused "
        "with a 503 and retry-after unless every limit it reaches fails open.",
    )


class FakeProviderSettings(StrictModel):
    """The bundled OpenAI-compatible fake provider, started when no real provider is enabled."""

    host: str = Field("127.0.0.1", description="Address it binds to.")
    port: int = Field(8090, ge=0, le=65535, description="Its HTTP port.")
    latency_ms: float = Field(0.0, ge=0, le=600_000, description="Delay added to every answer.")


class ServicesSettings(StrictModel):
    """Where each control-plane service listens."""

    router: RouterSettings = RouterSettings()
    ratelimit: RateLimitSettings = RateLimitSettings()
    authz: AuthzSettings = AuthzSettings()
    health: HealthSettings = HealthSettings()
    fault: FaultSettings = FaultSettings()


class StackConfig(StrictModel):
    """Everything the stack needs to run."""

    log_level: str = Field(
        "INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$", description="Log level of every service."
    )
    envoy: EnvoySettings = EnvoySettings()
    edge: EdgeSettings = EdgeSettings()
    redis: RedisSettings = RedisSettings()
    services: ServicesSettings = ServicesSettings()
    control: ControlSettings = ControlSettings()
    fake_provider: FakeProviderSettings = FakeProviderSettings()
    tracing: TracingSettings = TracingSettings()
    providers: list[ProviderSettings] = Field(
        default_factory=list,
        description="Real providers; enabled when their key (or AWS credentials) is set.",
    )
    models: list[ModelSettings] = Field(
        default_factory=list, description="Public model names and their targets."
    )

    @model_validator(mode="after")
    def _check_references(self) -> StackConfig:
        names = [p.name for p in self.providers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"providers: duplicate names {duplicates}")
        if DEMO_PROVIDER in names:
            raise ValueError(f"providers: the name {DEMO_PROVIDER!r} is reserved")
        model_names = [n for m in self.models for n in (m.name, *m.aliases)]
        duplicates = sorted({n for n in model_names if model_names.count(n) > 1})
        if duplicates:
            raise ValueError(f"models: duplicate names or aliases {duplicates}")
        for model in self.models:
            for target in model.targets:
                if target.provider not in names:
                    raise ValueError(
                        f"models: {model.name!r} targets unknown provider {target.provider!r}"
                    )
        self._check_cache_eviction()
        self._check_ports()
        return self

    def _ports(self) -> list[tuple[str, str, int]]:
        # (field, host, port) of every listener the stack runs, each service instance included.
        envoy = self.envoy
        ports = [
            (f"envoy.{field}", envoy.host, getattr(envoy, field))
            for field in ("listener_port", "control_port", "admin_port", "egress_port")
        ]
        ports.append(("fake_provider.port", self.fake_provider.host, self.fake_provider.port))
        for name in ServicesSettings.model_fields:
            service = getattr(self.services, name)
            for index, instance in enumerate(service.all_instances()):
                where = f"services.{name}" + (f" (instance {index})" if index else "")
                for field in ("grpc_port", "metrics_port"):
                    port = getattr(instance, field)
                    ports.append((f"{where}.{field}", instance.listen_host, port))
        return ports

    def _check_ports(self) -> None:
        # Instances take port + i * port_step: a range may run into another listener's port.
        seen: dict[tuple[str, int], str] = {}
        for field, host, port in self._ports():
            if port == 0:  # picked by the OS when the server starts
                continue
            other = seen.setdefault((host, port), field)
            if other != field:
                raise ValueError(
                    f"{field}: port {port} is also {other}; change the port, instances or "
                    "port_step so that every listener has its own"
                )

    def _check_cache_eviction(self) -> None:
        # Cache pressure must never evict authoritative state: on the Redis that holds API keys,
        # usage, limits and experiments, allkeys-* evicts keys and volatile-* evicts the usage
        # and rate limit counters (they have TTLs too). Only a Redis of the cache's own may.
        cache = self.services.router.cache
        url = self.cache_redis_url
        if url is not None and redis_server_of(url) != redis_server_of(self.redis.url):
            return
        for field in ("maxmemory_policy", "maxmemory"):
            value = getattr(cache, field)
            if value is not None:
                raise ValueError(
                    f"services.router.cache.{field}: {value} would apply to the stack's Redis "
                    "and evict API keys, usage or rate limit counters under cache pressure; "
                    "set services.router.cache.redis_url to a Redis server of the cache's own "
                    "(another database of the same server shares its memory and policy)"
                )

    def for_instance(self, service: str, index: int) -> StackConfig:
        """This configuration as instance index of service sees it: its own ports in place.

        ConfigError when the service has no such instance.
        """
        if index == 0:
            return self
        settings: ServiceSettings = getattr(self.services, service)
        if not 0 <= index < settings.instances:
            raise ConfigError(
                f"services.{service}.instances is {settings.instances}: there is no instance "
                f"{index} (0..{settings.instances - 1})"
            )
        services = self.services.model_copy(update={service: settings.instance(index)})
        return self.model_copy(update={"services": services})

    @property
    def cache_redis_url(self) -> str | None:
        """The response cache's own Redis, or None when the cache shares the stack's."""
        url = self.services.router.cache.redis_url
        return None if url is None or url == self.redis.url else url

    def enabled_providers(self, environ: Mapping[str, str]) -> list[ProviderSettings]:
        """The providers whose credentials are present in environ (or that need none)."""
        return [p for p in self.providers if p.enabled_in(environ)]

    def demo_mode(self, environ: Mapping[str, str]) -> bool:
        """True when no real provider is enabled and the fake provider answers every model."""
        return not self.enabled_providers(environ)

    def served_models(self, environ: Mapping[str, str]) -> list[ModelSettings]:
        """The models with at least one enabled target, keeping only those targets.

        In demo mode every configured model is served by the fake provider under its own name.
        """
        if self.demo_mode(environ):
            return [
                m.model_copy(
                    update={"targets": [ModelTarget(provider=DEMO_PROVIDER, model=m.name)]}
                )
                for m in self.models
            ]
        enabled = {p.name for p in self.enabled_providers(environ)}
        served = [
            m.model_copy(update={"targets": [t for t in m.targets if t.provider in enabled]})
            for m in self.models
        ]
        return [m for m in served if m.targets]

    def routing_table(self, environ: Mapping[str, str]) -> dict[str, list[ModelTarget]]:
        """Each served model's targets, by public name."""
        return {m.name: m.targets for m in self.served_models(environ)}

    def provider_endpoints(self, environ: Mapping[str, str]) -> list[ProviderSettings]:
        """The providers requests may go to: the enabled ones, or the fake one in demo mode."""
        if self.demo_mode(environ):
            fake = self.fake_provider
            return [
                ProviderSettings(name=DEMO_PROVIDER, base_url=f"http://{fake.host}:{fake.port}/v1")
            ]
        return self.enabled_providers(environ)


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    overrides = []
    for name, raw in sorted(environ.items()):
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
            try:
                value = yaml.safe_load(raw) if raw else raw
            except yaml.YAMLError as exc:
                raise ConfigError(f"{name}: not a valid YAML value ({exc})") from exc
            overrides.append((path, value))
    return overrides


def _apply(data: dict[str, Any], path: list[str], value: Any, source: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: {'.'.join(path)} does not name a nested field")
        node = child
    node[path[-1]] = value


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def config_path(environ: Mapping[str, str], explicit: str | Path | None = None) -> Path:
    """The config file to read: explicit, else $LLMPROXY_CONFIG, else deploy/llmproxy.yaml."""
    return Path(explicit or environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> StackConfig:
    """Read, override and validate the configuration, or raise ConfigError saying what is wrong."""
    env = os.environ if environ is None else environ
    file = config_path(env, path)
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping")
    for keys, value in _env_overrides(env):
        _apply(data, keys, value, ENV_PREFIX + "__".join(k.upper() for k in keys))
    try:
        return StackConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration {file}:\n{_describe(exc)}") from exc
