"""The authorization service's part of the configuration."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import ServiceSettings


class AuthzSettings(ServiceSettings):
    """Where the authorization service listens."""

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9103, ge=0, le=65535, description="Prometheus /metrics port.")
