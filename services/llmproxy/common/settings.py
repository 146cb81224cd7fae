"""Configuration shapes shared by every service (ports, Redis)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


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
