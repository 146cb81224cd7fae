"""Configuration shapes shared by more than one service: ports, Redis, providers, health client.

The router calls providers and health probes them, so both read ProviderSettings; the router
follows the health service with HealthClientSettings, configured beside the service it follows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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

    @property
    def listen_host(self) -> str:
        """The address to bind to."""
        return self.bind_host or self.host


class RedisSettings(StrictModel):
    """The Redis every stateful service shares."""

    url: str = Field(
        "redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="redis:// or rediss:// URL of the Redis server.",
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
    retries: int = Field(
        2, ge=0, le=10, description="Retries of a failed Redis call, with jittered backoff."
    )


class ProviderSettings(StrictModel):
    """One upstream LLM provider."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Unique provider name.")
    kind: Literal["openai", "anthropic"] = Field(
        "openai",
        description="API flavour: 'openai' for any OpenAI-compatible endpoint, 'anthropic' for "
        "Anthropic's Messages API (translated to and from OpenAI's format).",
    )
    base_url: str = Field(pattern=r"^https?://", description="Base URL, up to and including /v1.")
    api_key_env: str | None = Field(
        None,
        description="Environment variable holding the API key. The provider is enabled only "
        "when it is set, unless this is null (a keyless local server such as vLLM).",
    )
    timeout_s: float = Field(60.0, gt=0, le=3600, description="Timeout of one provider call.")

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")


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
