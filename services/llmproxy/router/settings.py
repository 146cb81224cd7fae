"""The router's part of the configuration: providers, models and how requests reach them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llmproxy.common.settings import ServiceSettings, StrictModel


class ProviderSettings(StrictModel):
    """One upstream LLM provider."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$", description="Unique provider name.")
    kind: Literal["openai"] = Field(
        "openai", description="API flavour: 'openai' for any OpenAI-compatible endpoint."
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


class ModelTarget(StrictModel):
    """One provider and the model name it knows."""

    provider: str = Field(description="Name of a configured provider.")
    model: str = Field(min_length=1, description="Model name sent to that provider.")


class ModelSettings(StrictModel):
    """A public model name and its ordered provider targets."""

    name: str = Field(min_length=1, description="The name clients send as `model`.")
    targets: list[ModelTarget] = Field(min_length=1, description="Targets, tried in order.")


class RouterSettings(ServiceSettings):
    """Where the router listens."""

    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus /metrics port.")
