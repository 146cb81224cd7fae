"""Configuration shapes shared by more than one service: ports, Redis, providers, health client.

The router calls providers and health probes them, so both read ProviderSettings; the router
follows the health service with HealthClientSettings, configured beside the service it follows.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from llmproxy.common.net import is_ip


class StrictModel(BaseModel):
    """Base of every configuration model: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Port = Field(ge=1, le=65535)


class ServiceSettings(StrictModel):
    """Where one service listens."""

    host: str = Field(
        "127.0.0.1", description="Address Envoy and other services reach this service at."
    )
    bind_host: str | None = Field(
        None,
        description="Address the gRPC and metrics servers bind to; null means `host`. "
        "Containers set 0.0.0.0 here and their service name as `host`.",
    )
    grpc_port: int = Field(ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int = Field(
        ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one."
    )
    shutdown_grace_s: float = Field(
        5.0, gt=0, le=300, description="How long in-flight RPCs may run after SIGTERM."
    )
    instances: int = Field(
        1,
        ge=1,
        le=16,
        description="Processes of this service the stack runs, each its own endpoint of "
        "Envoy's cluster for it (least-request balanced, health-checked, outliers ejected). "
        "Instance i listens on grpc_port + i * port_step and serves metrics on "
        "metrics_port + i * port_step.",
    )
    port_step: int = Field(
        10,
        ge=1,
        le=1000,
        description="Port distance between instances; 10 keeps clear of the other services' "
        "consecutive default ports.",
    )

    @property
    def listen_host(self) -> str:
        """The address to bind to."""
        return self.bind_host or self.host

    def instance(self, index: int) -> Self:
        """The settings of instance index (0 is the configured one): its own ports."""
        if not 0 <= index < self.instances:
            raise ValueError(f"instance {index} out of range 0..{self.instances - 1}")
        shift = index * self.port_step
        return self.model_copy(
            update={
                "grpc_port": self.grpc_port + shift if self.grpc_port else 0,
                "metrics_port": self.metrics_port + shift if self.metrics_port else 0,
            }
        )

    def all_instances(self) -> list[Self]:
        """Every instance's settings, instance 0 first."""
        return [self.instance(i) for i in range(self.instances)]

    def grpc_ports(self) -> list[int]:
        """The gRPC port of every instance, for Envoy's cluster."""
        return [s.grpc_port for s in self.all_instances()]

    def grpc_target(self) -> str:
        """The gRPC target other services dial: every instance, balanced by the client.

        One instance is host:port. Several on an IP literal are an `ipv4:`/`ipv6:` list the
        client balances round-robin (GRPC_BALANCED); a DNS name (a Kubernetes Service) is
        resolved to every address it has.
        """
        if self.instances == 1:
            return f"{self.host}:{self.grpc_port}"
        if not is_ip(self.host):
            return f"dns:///{self.host}:{self.grpc_port}"
        scheme = "ipv6" if ":" in self.host else "ipv4"
        host = f"[{self.host}]" if scheme == "ipv6" else self.host
        return f"{scheme}:" + ",".join(f"{host}:{port}" for port in self.grpc_ports())


# Channel options for a grpc_target(): spread calls over every address, so that one instance
# dying moves its share to the others instead of failing until a reconnect picks another.
GRPC_BALANCED: tuple[tuple[str, str], ...] = (
    ("grpc.service_config", '{"loadBalancingConfig": [{"round_robin": {}}]}'),
)


SENTINEL_SCHEME = "redis+sentinel"
# How the services reach Redis: one server, a primary watched by Sentinel, or a Cluster.
RedisTopology = Literal["single", "sentinel", "cluster"]


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://host:port,host:port/primary_name[/db]` URL."""

    sentinels: tuple[tuple[str, int], ...]
    primary: str
    db: int


def parse_sentinel_url(url: str) -> SentinelURL:
    """The sentinels, primary name and db of a Sentinel URL; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
    sentinels = []
    for address in parts.netloc.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sentinel address {address!r} is not host:port")
        sentinels.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("the path must be /<primary name> or /<primary name>/<db number>")
    return SentinelURL(tuple(sentinels), path[0], int(path[1]) if len(path) == 2 else 0)


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def redis_server_of(url: str) -> tuple[str, ...]:
    """What identifies the server (or Sentinel-watched primary) a Redis URL reaches.

    The database number does not count: eviction and memory limits are per server. Loopback
    names count as one host and a missing port as 6379, so spellings of one server compare equal.
    """
    if url.startswith(SENTINEL_SCHEME):
        parsed = parse_sentinel_url(url)
        return ("sentinel", parsed.primary, *sorted(f"{h}:{p}" for h, p in parsed.sentinels))
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return ("redis", "loopback" if host in _LOOPBACK else host, str(parts.port or 6379))


class RedisSettings(StrictModel):
    """The Redis every stateful service shares."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        pattern=r"^(rediss?|redis\+sentinel)://",
        description="redis:// or rediss:// URL of the Redis server (or of a Cluster node), or "
        "redis+sentinel://host:port,host:port/<primary name>[/db] for a primary watched by "
        "Redis Sentinel.",
    )
    managed: bool = Field(
        True,
        description="Whether `make up` starts a local redis-server for this URL "
        "(false: an external Redis is used as is).",
    )
    socket_timeout_s: float = Field(0.5, gt=0, le=30, description="Timeout of one Redis call.")
    cluster: bool = Field(
        False, description="Whether url names a node of a Redis Cluster (keys are hash-tagged)."
    )
    topology: RedisTopology | None = Field(
        None,
        description="single, sentinel or cluster; null infers it (sentinel for a "
        "redis+sentinel:// url, cluster when cluster is true, else single). When set, url and "
        "cluster must agree with it (`topology: cluster` alone is enough for a Cluster).",
    )
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed Redis call, with jittered backoff."
    )
    degraded_start: bool = Field(
        False,
        description="Whether a service may start while its Redis does not answer (and run on "
        "its fallback until it does); false, the default, stops startup with exit 2 naming "
        "redis.url.",
    )

    @property
    def is_sentinel(self) -> bool:
        """Whether url names a primary watched by Sentinel."""
        return self.url.startswith(SENTINEL_SCHEME)

    @property
    def resolved_topology(self) -> RedisTopology:
        """The topology the services connect to: topology when set, else inferred."""
        if self.topology is not None:
            return self.topology
        if self.is_sentinel:
            return "sentinel"
        return "cluster" if self.cluster else "single"

    def with_url(self, url: str) -> RedisSettings:
        """These settings for another Redis (the response cache's own): its topology is
        inferred from its URL, a Cluster's cluster flag carried over."""
        cluster = self.resolved_topology == "cluster"
        return self.model_copy(update={"url": url, "topology": None, "cluster": cluster})

    @model_validator(mode="after")
    def _check_sentinel(self) -> RedisSettings:
        if self.is_sentinel:
            try:
                parse_sentinel_url(self.url)
            except ValueError as exc:
                raise ValueError(f"url: {exc}") from exc
            if self.cluster:
                raise ValueError("cluster: a Sentinel URL names a primary, not a Cluster node")
        return self

    @model_validator(mode="after")
    def _check_topology(self) -> RedisSettings:
        problem = self._topology_disagreement()
        if problem is None:
            return self
        raise _field_error(self, "topology", problem)

    def _topology_disagreement(self) -> str | None:
        # What to change when the named topology contradicts url or cluster, else None.
        topology, scheme = self.topology, urlsplit(self.url).scheme
        if topology is None:
            return None
        if topology == "sentinel" and not self.is_sentinel:
            return (
                f"sentinel needs a redis+sentinel://host:port,host:port/<primary "
                f"name>[/db] url naming the sentinels, but redis.url is a {scheme}:// URL; "
                "change redis.url, or set topology: single (or leave it unset)"
            )
        if topology != "sentinel" and self.is_sentinel:
            return (
                f"{topology} contradicts redis.url, a redis+sentinel:// URL; set "
                "topology: sentinel (or leave it unset), or give redis.url a redis:// URL"
            )
        if topology == "single" and self.cluster:
            return (
                "single contradicts redis.cluster: true; set topology: cluster "
                "(or leave it unset), or cluster: false"
            )
        if topology == "cluster" and not self.cluster and "cluster" in self.model_fields_set:
            return (
                "cluster contradicts redis.cluster: false; set cluster: true (or "
                "leave it unset), or topology: single"
            )
        return None


# Variables by which the standard AWS environment names credentials (botocore's chain): a
# bedrock provider is enabled when one of these sets is complete.
AWS_CREDENTIAL_ENV: tuple[tuple[str, ...], ...] = (
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("AWS_PROFILE",),
    ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"),
    ("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI",),
)
_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$"


class ProviderSettings(StrictModel):
    """One upstream LLM provider."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Unique provider name.")
    kind: Literal["openai", "anthropic", "azure", "gemini", "bedrock"] = Field(
        "openai",
        description="API flavour: 'openai' for any OpenAI-compatible endpoint (Azure's v1 "
        "endpoint included), 'anthropic' for Anthropic's Messages API, 'azure' for Azure "
        "OpenAI's deployment API, 'gemini' for Google Gemini's generateContent API, 'bedrock' "
        "for AWS Bedrock's Converse API (each translated to and from OpenAI's format).",
    )
    base_url: str = Field(
        pattern=r"^https?://",
        description="Base URL, up to and including /v1 (an Azure resource's endpoint, e.g. "
        "https://RESOURCE.openai.azure.com; Gemini's "
        "https://generativelanguage.googleapis.com/v1beta). For bedrock it may be left out: "
        "https://bedrock-runtime.{region}.amazonaws.com.",
    )
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the API key. The provider is enabled only "
        "when it is set, unless this is null (a keyless local server such as vLLM). Not for "
        "bedrock, which signs with the standard AWS credentials and is enabled when the "
        "environment names them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
        "a web identity or container credentials).",
    )
    region: str | None = Field(
        None,
        pattern=_REGION,
        description="AWS region of a bedrock provider (e.g. us-east-1): the one its calls are "
        "signed for. Required for bedrock, refused for other kinds.",
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of one provider call.")
    api_version: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9.-]{1,40}$",
        description="Azure OpenAI's api-version query parameter (e.g. 2024-10-21); required "
        "for kind 'azure' and refused for every other kind.",
    )

    @model_validator(mode="before")
    @classmethod
    def _bedrock_default_url(cls, data: Any) -> Any:
        # Bedrock's URL follows from its region: asking for both would only invite mismatches.
        if isinstance(data, dict) and data.get("kind") == "bedrock" and "base_url" not in data:
            region = data.get("region")
            if region is None:  # said here: the missing base_url would hide the real cause
                raise _missing_region()
            if isinstance(region, str) and re.match(_REGION, region):
                return {**data, "base_url": f"https://bedrock-runtime.{region}.amazonaws.com"}
        return data

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_api_version(self) -> ProviderSettings:
        if (self.kind == "azure") == (self.api_version is not None):
            return self
        problem = (
            "kind 'azure' needs an api_version (e.g. 2024-10-21)"
            if self.kind == "azure"
            else f"only kind 'azure' takes an api_version, not kind {self.kind!r}"
        )
        raise _field_error(self, "api_version", problem)

    @model_validator(mode="after")
    def _check_region(self) -> ProviderSettings:
        if self.kind == "bedrock" and self.region is None:
            raise _missing_region()
        if self.kind != "bedrock" and self.region is not None:
            raise _field_error(
                self, "region", f"only bedrock providers take a region, not {self.kind}"
            )
        if self.kind == "bedrock" and self.api_key_env is not None:
            raise _field_error(
                self,
                "api_key_env",
                "bedrock signs with the standard AWS credentials (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE); remove api_key_env",
            )
        return self

    def enabled_in(self, environ: Mapping[str, str]) -> bool:
        """Whether environ holds what this provider needs: its key, or AWS credentials."""
        if self.kind == "bedrock":
            return any(all(environ.get(name) for name in names) for names in AWS_CREDENTIAL_ENV)
        return self.api_key_env is None or bool(environ.get(self.api_key_env))


def _field_error(model: BaseModel, field: str, message: str) -> ValidationError:
    # A validation error located at field, so that the message names e.g. providers.0.region.
    return _located(type(model).__name__, field, getattr(model, field), message)


def _missing_region() -> ValidationError:
    return _located(
        ProviderSettings.__name__, "region", None, "a bedrock provider needs its AWS region"
    )


def _located(title: str, field: str, value: Any, message: str) -> ValidationError:
    error = PydanticCustomError("invalid_field", message)
    details = InitErrorDetails(type=error, loc=(field,), input=value)
    return ValidationError.from_exception_data(title, [details])


class HealthClientSettings(StrictModel):
    """How the router follows the health service and reports call outcomes to it."""

    enabled: bool = Field(
        True, description="Whether the router subscribes to provider health at all."
    )
    report_interval_s: float = Field(
        0.25, gt=0, le=60, description="How often batched call outcomes are sent."
    )
    max_batch: int = Field(
        1000, ge=1, le=10_000, description="Most outcomes sent in one ReportOutcomes call."
    )
    max_pending: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="Outcomes kept while the health service cannot be reached; the oldest "
        "are dropped (and counted) beyond this.",
    )
    call_timeout_s: float = Field(
        1.0, gt=0, le=30, description="Timeout of one ReportOutcomes call."
    )
    reconnect_min_s: float = Field(
        0.2, gt=0, le=60, description="First wait before watching again after a broken stream."
    )
    reconnect_max_s: float = Field(5.0, gt=0, le=300, description="Longest such wait.")
    stale_after_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="How long the last known states are trusted once the health service is "
        "unreachable; after that every provider counts as available.",
    )


_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ControlSettings(StrictModel):
    """How every service checks the callers of its control RPCs (docs/security.md)."""

    service_token_env: str = Field(
        "LLMPROXY_SERVICE_TOKEN",
        pattern=_ENV_NAME,
        description="Environment variable holding the stack's service token (at least 32 "
        "characters), which the services present to each other; every service needs it, and "
        "`make up` mints a new one on each start.",
    )
    admin_token_env: str = Field(
        "LLMPROXY_ADMIN_TOKEN",
        pattern=_ENV_NAME,
        description="Environment variable holding the bootstrap admin token (at least 32 "
        "characters). authz needs it for the first call; a service that has it too accepts it "
        "without asking authz (break-glass while authz is down).",
    )
    token_cache_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a service trusts authz's answer about a control token: a revoked "
        "token is refused everywhere within this long.",
    )
    token_stale_grace_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="While authz is unreachable, tokens a service saw valid keep working for "
        "this long (no revocation reaches it meanwhile); unknown tokens are refused with "
        "UNAVAILABLE. 0 refuses at once.",
    )
    introspect_timeout_s: float = Field(
        1.0, gt=0, le=30, description="Longest a service waits for authz to check a token."
    )
    audit_max_records: int = Field(
        100_000,
        ge=100,
        le=100_000_000,
        description="Audit records kept in Redis (about), for every service together.",
    )
