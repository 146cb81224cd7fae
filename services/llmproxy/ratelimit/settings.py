"""The rate limit service's part of the configuration."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import ServiceSettings


class RateLimitSettings(ServiceSettings):
    """Where the rate limit service listens and which domain it answers for."""

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9102, ge=0, le=65535, description="Prometheus /metrics port.")
    domain: str = Field(
        "llmproxy", min_length=1, description="Rate limit domain Envoy sends descriptors under."
    )
