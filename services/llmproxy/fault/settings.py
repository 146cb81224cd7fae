"""The fault service's part of the configuration."""

from __future__ import annotations

from pydantic import Field, model_validator

from llmproxy.common.settings import ServiceSettings


class FaultSettings(ServiceSettings):
    """Where the fault service listens, and how long its faults may outlive it."""

    grpc_port: int = Field(50055, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9105, ge=0, le=65535, description="Prometheus /metrics port.")
    key_prefix: str = Field(
        "llmproxy:fault", min_length=1, description="Prefix of the Redis keys of experiments."
    )
    rtds_ttl_s: float = Field(
        3.0,
        ge=1,
        le=60,
        description="TTL of the runtime resource Envoy gets: a killed fault service's faults "
        "vanish from Envoy within it.",
    )
    rtds_heartbeat_s: float = Field(
        1.0, gt=0, le=30, description="How often the resource's TTL is renewed (below the TTL)."
    )
    tick_s: float = Field(
        0.25, gt=0, le=5, description="How often the runner checks start times and expiries."
    )
    hypothesis_interval_s: float = Field(
        1.0, gt=0, le=10, description="How often running experiments' hypotheses are judged."
    )
    bandwidth_kbps: int = Field(
        64,
        ge=1,
        le=1_000_000,
        description="Response bandwidth (KiB/s) of bandwidth faults: Envoy reads it from its "
        "config, not from runtime, so it is fixed here.",
    )
    agent_timeout_s: float = Field(
        2.0, gt=0, le=30, description="Timeout of a call to a service's chaos agent."
    )
    lease_s: float = Field(
        5.0,
        ge=1,
        le=60,
        description="The leader lease: with several instances only its holder runs "
        "experiments, and another instance takes over within this long of the leader's death.",
    )
    follow_interval_s: float = Field(
        0.5,
        gt=0,
        le=5,
        description="How often an instance that does not lead reads the leader's running set "
        "from Redis (what it serves to Envoy).",
    )

    @model_validator(mode="after")
    def _heartbeat_within_ttl(self) -> FaultSettings:
        if self.rtds_heartbeat_s >= self.rtds_ttl_s:
            raise ValueError(
                f"rtds_heartbeat_s ({self.rtds_heartbeat_s}) must be below rtds_ttl_s "
                f"({self.rtds_ttl_s}), or Envoy drops the faults between two heartbeats"
            )
        if self.follow_interval_s >= self.lease_s:
            raise ValueError(
                f"follow_interval_s ({self.follow_interval_s}) must be below lease_s "
                f"({self.lease_s})"
            )
        return self
