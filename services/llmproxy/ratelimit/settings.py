"""The rate limit service's part of the configuration."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from llmproxy.common.settings import ServiceSettings

# deploy/ratelimit.yaml, beside the shipped deploy/llmproxy.yaml.
DEFAULT_LIMITS_FILE = Path(__file__).resolve().parents[3] / "deploy" / "ratelimit.yaml"


class RateLimitSettings(ServiceSettings):
    """Where the rate limit service listens, where its limits are, how it degrades."""

    grpc_port: int = Field(50052, ge=0, le=65535, description="gRPC port (of instance 0).")
    metrics_port: int = Field(
        9102, ge=0, le=65535, description="Prometheus /metrics port (of instance 0)."
    )
    domain: str = Field(
        "llmproxy", min_length=1, description="Rate limit domain Envoy sends descriptors under."
    )
    limits_file: Path = Field(
        DEFAULT_LIMITS_FILE,
        description="The limits file (envoyproxy/ratelimit's format, see deploy/ratelimit.yaml); "
        "a relative path is read from the working directory. Watched: edits apply live.",
    )
    redis_timeout_s: float = Field(
        0.08,
        gt=0,
        le=5,
        description="How long a Redis call may go unanswered before it counts as a timeout; "
        "three in a row degrade this instance to its local limiter (until then a late answer "
        "is still waited for, so limits stay exact). Three of them stay below Envoy's "
        "ratelimit_timeout_s (0.5) so that Envoy gets an answer; one stays above this "
        "service's own queueing at full load.",
    )
    deadline_margin_ms: float = Field(
        100.0,
        ge=0,
        le=1000,
        description="A decision not ready this long before Envoy's deadline (its timeout, "
        "ratelimit_timeout_s, sent as the call's grpc-timeout) counts nothing and fails the "
        "check: Envoy's clock started before ours and the answer still has to reach it, so a "
        "later one could arrive after Envoy gave up, and its hits would be spent on a request "
        "Envoy did not admit.",
    )
    probe_interval_s: float = Field(
        0.5, gt=0, le=60, description="How often a degraded instance checks whether Redis is back."
    )
    reload_interval_s: float = Field(
        1.0, gt=0, le=3600, description="How often the limits file is checked for changes."
    )
    max_batch: int = Field(
        256,
        ge=1,
        le=10_000,
        description="Most descriptor checks sent to Redis in one script call; concurrent "
        "requests share calls up to this size.",
    )
    batch_window_ms: float = Field(
        2.0,
        ge=0,
        le=50,
        description="Under load (requests arriving less than this apart on average), "
        "how long a due batch waits for more checks to share its Redis call; sparse requests "
        "never wait. 0 sends every batch at once.",
    )
    local_cache_size: int = Field(
        100_000,
        ge=0,
        le=10_000_000,
        description="Most over-limit keys remembered locally until their reset "
        "(0 turns the cache off).",
    )
