"""The fault service's part of the configuration."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import ServiceSettings


class FaultSettings(ServiceSettings):
    """Where the fault service listens."""

    grpc_port: int = Field(50055, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9105, ge=0, le=65535, description="Prometheus /metrics port.")
