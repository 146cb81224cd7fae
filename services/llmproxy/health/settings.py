"""The provider health service's part of the configuration."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import ServiceSettings


class HealthSettings(ServiceSettings):
    """Where the provider health service listens."""

    grpc_port: int = Field(50054, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9104, ge=0, le=65535, description="Prometheus /metrics port.")
