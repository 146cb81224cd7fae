"""The authorization service's part of the configuration."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import ServiceSettings

# The name of an environment variable, not a secret.
HMAC_SECRET_ENV = "LLMPROXY_AUTHZ_HMAC_SECRET"  # noqa: S105


class AuthzSettings(ServiceSettings):
    """Where the authorization service listens, where its HMAC secret is, how it caches keys."""

    grpc_port: int = Field(50053, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9103, ge=0, le=65535, description="Prometheus /metrics port.")
    hmac_secret_env: str = Field(
        HMAC_SECRET_ENV,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding the server secret (at least 32 characters) "
        "that API keys and control tokens are hashed with (HMAC-SHA256). Required; changing it "
        "invalidates every key and control token.",
    )
    cache_ttl_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a key record is cached in process. Changes reach every instance "
        "at once over Redis pub/sub; the TTL only bounds staleness if that fails silently.",
    )
    cache_max_keys: int = Field(
        100_000, ge=1, le=10_000_000, description="Most key records (and misses) cached."
    )
    stale_grace_s: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="While Redis is unreachable, keys seen before keep being authorized from "
        "their last-known records (and budgets from their last-known spend) for this long; "
        "unknown keys fail closed at once. No revocation reaches authz meanwhile. 0 fails "
        "closed at once.",
    )
    redis_timeout_s: float = Field(
        0.2,
        gt=0,
        le=10,
        description="Longest a check waits for Redis before deciding from last-known records; "
        "below Envoy's ext_authz_timeout_s so that a hanging Redis still gets answers.",
    )
    failure_mode_allow: bool = Field(
        False,
        description="Whether Envoy lets requests through when the authz service cannot answer "
        "(down, timed out). False, the default, fails closed with 503: no verdict, no provider "
        "spend.",
    )
