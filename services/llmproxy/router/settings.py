"""The router's part of the configuration: providers, models and how requests reach them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, model_validator

from llmproxy.common.settings import ServiceSettings, StrictModel
from llmproxy.router.pricing import Prices


class ModelTarget(StrictModel):
    """One provider and the model name it knows."""

    provider: str = Field(description="Name of a configured provider.")
    model: str = Field(min_length=1, description="Model name sent to that provider.")
    weight: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="With routing: weighted, this target's share of first attempts (relative to "
        "the other targets' weights; 0: only a fallback); null counts as 1. Refused with any "
        "other routing.",
    )
    input_usd_per_mtok: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="This target's price of a million prompt tokens; null: the model's.",
    )
    output_usd_per_mtok: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="This target's price of a million completion tokens; null: the model's.",
    )
    cached_input_usd_per_mtok: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="This target's price of a million prompt tokens read from the provider's "
        "prompt cache; null: the model's cached_input_usd_per_mtok if set, else this target's "
        "input price.",
    )


_MODEL_PRICED = ModelTarget(provider="", model="-")
"""A target that sets no prices: priced at its model's."""

Routing = Literal["ordered", "weighted", "least-latency", "least-busy"]
"""How a model's targets are ordered for one request (router/routing.py)."""


class ModelSettings(StrictModel):
    """A public model name, its aliases, its provider targets, how to pick one, and its prices."""

    name: str = Field(min_length=1, description="The name clients send as `model`.")
    aliases: list[str] = Field(
        default_factory=list, description="Other names clients may send for this model."
    )
    targets: list[ModelTarget] = Field(
        min_length=1,
        description="Where the model is served; routing picks the one a request tries first, "
        "the others are its fallbacks.",
    )
    routing: Routing = Field(
        "ordered",
        description="Which target a request tries first; the others follow as fallbacks. "
        "ordered: the order of targets. weighted: drawn by the targets' weights. "
        "least-latency: the fastest, as measured by the health service's probes, else by this "
        "router's own calls. least-busy: the one with the fewest calls in flight from this "
        "router instance.",
    )
    input_usd_per_mtok: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="Price of a million prompt tokens, for spend, budgets and saved cost; the "
        "price of every target that sets none of its own.",
    )
    output_usd_per_mtok: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="Price of a million completion tokens (of every target that sets none).",
    )
    cached_input_usd_per_mtok: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Price of a million prompt tokens the provider read from its prompt cache "
        "(OpenAI's cached_tokens, Anthropic's and Bedrock's cache reads, Gemini's cached "
        "content), at most the input price; null: the input price, no discount.",
    )
    cache_ttl_s: int | None = Field(
        None, ge=1, description="How long answers of this model stay cached; null: the default."
    )
    # Each target's prices by provider, filled in by the validation.
    _prices: dict[str, Prices] = PrivateAttr(default_factory=dict)
    _default_prices: Prices = PrivateAttr(default=Prices(0.0, 0.0, 0.0))

    @model_validator(mode="after")
    def _check_weights(self) -> ModelSettings:
        weighted = [i for i, t in enumerate(self.targets) if t.weight is not None]
        if self.routing != "weighted":
            if weighted:
                raise ValueError(
                    f"targets[{weighted[0]}].weight: weights apply only with routing: weighted "
                    f"(model {self.name!r} has routing: {self.routing})"
                )
        elif not any(t.weight is None or t.weight > 0 for t in self.targets):
            raise ValueError(
                f"targets[].weight: every weight of model {self.name!r} is 0, so no target "
                "could be drawn; give at least one a weight above 0"
            )
        return self

    @model_validator(mode="after")
    def _check_prices(self) -> ModelSettings:
        if (
            self.cached_input_usd_per_mtok is not None
            and self.cached_input_usd_per_mtok > self.input_usd_per_mtok
        ):
            raise ValueError(
                f"cached_input_usd_per_mtok: {self.cached_input_usd_per_mtok} is above "
                f"input_usd_per_mtok {self.input_usd_per_mtok} (model {self.name!r}); a cache "
                "read costs at most an uncached prompt token"
            )
        seen: dict[str, tuple[int, Prices]] = {}
        for index, target in enumerate(self.targets):
            own = self._target_prices(target)
            if own.cached_input_usd_per_mtok > own.input_usd_per_mtok:
                raise ValueError(
                    f"targets[{index}].cached_input_usd_per_mtok: "
                    f"{own.cached_input_usd_per_mtok} is above the target's input price "
                    f"{own.input_usd_per_mtok} (model {self.name!r}); set the target's "
                    "cached_input_usd_per_mtok"
                )
            first, prices = seen.setdefault(target.provider, (index, own))
            if prices != own:
                raise ValueError(
                    f"targets[{index}]: provider {target.provider!r} is also targets[{first}] "
                    f"of model {self.name!r}, at other prices; a call is priced by the provider "
                    "that answered it, so one model's targets on one provider need the same prices"
                )
        self._prices = {provider: prices for provider, (_, prices) in seen.items()}
        self._default_prices = self._target_prices(_MODEL_PRICED)
        return self

    def _target_prices(self, target: ModelTarget) -> Prices:
        """target's own prices where it sets them, else the model's."""
        input_price = _first(target.input_usd_per_mtok, self.input_usd_per_mtok)
        return Prices(
            input_price,
            _first(target.output_usd_per_mtok, self.output_usd_per_mtok),
            _first(target.cached_input_usd_per_mtok, self.cached_input_usd_per_mtok, input_price),
        )

    def prices(self, provider: str | None) -> Prices:
        """The prices of a call that provider answered: its target's, else the model's own
        (e.g. the fake provider of demo mode, which is no configured target)."""
        found = self._prices.get(provider or "")
        return found if found is not None else self._default_prices


def _first(*prices: float | None) -> float:
    """The first price that is set (the last one always is)."""
    return next(p for p in prices if p is not None)


class CacheSettings(StrictModel):
    """The exact-match response cache in Redis."""

    enabled: bool = Field(True, description="Whether answers are cached at all.")
    default_ttl_s: int = Field(3600, ge=1, description="TTL of an entry when nothing else says.")
    max_ttl_s: int = Field(
        7 * 86400, ge=1, description="Largest TTL a request's x-llmproxy-cache-ttl may ask for."
    )
    cache_nondeterministic: bool = Field(
        False,
        description="Cache requests whose temperature is not 0 too. Off by default: a sampled "
        "answer is not the answer; a request can still opt in with x-llmproxy-cache: force.",
    )
    max_entry_bytes: int = Field(
        1024 * 1024, ge=1024, description="Answers larger than this are not cached."
    )
    scope: Literal["tenant", "global"] = Field(
        "tenant",
        description="Who shares cached answers. tenant: each tenant its own entries, so no "
        "tenant can tell from x-cache: HIT that another sent the same prompt. global: every "
        "tenant shares them (more hits), at the cost of that leak; an explicit opt-in.",
    )
    redis_url: str | None = Field(
        None,
        pattern=r"^rediss?://",
        description="A Redis of the cache's own, where cache pressure evicts only cache entries; "
        "null: the stack's Redis, left without an eviction policy (entries leave by their TTL).",
    )
    maxmemory_policy: (
        Literal["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "volatile-ttl"] | None
    ) = Field(
        None,
        description="Eviction policy set on the cache's own Redis at startup (CONFIG SET); null "
        "leaves it as is. Refused without redis_url: on the stack's Redis any policy could evict "
        "API keys (allkeys-*) or usage and rate limit counters, which have TTLs too (volatile-*).",
    )
    maxmemory: str | None = Field(
        None,
        pattern=r"^\d+(kb|mb|gb)?$",
        description="maxmemory set on the cache's own Redis at startup, e.g. 256mb; refused "
        "without redis_url (it would cap authoritative state too).",
    )
    redis_backoff_s: float = Field(
        1.0, gt=0, le=60, description="After a Redis error, requests skip the cache this long."
    )


class FailoverSettings(StrictModel):
    """How the router moves between a model's targets."""

    retries_per_target: int = Field(
        1, ge=0, le=5, description="Extra attempts on one target after a retryable failure."
    )
    backoff_base_s: float = Field(0.05, ge=0, le=10, description="First retry's backoff.")
    backoff_max_s: float = Field(1.0, ge=0, le=60, description="Largest backoff of one retry.")
    max_retry_after_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="A provider's Retry-After up to this is waited out on the same target; "
        "longer ones move on to the next target at once.",
    )


class RoutingSettings(StrictModel):
    """What the least-latency routing of models measures with."""

    latency_max_age_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Latencies measured longer ago than this are not used: a health probe's, "
        "and this router's own average of a target (then that target is tried first once, to "
        "measure it again).",
    )
    latency_ewma_alpha: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Weight of the newest call in the router's moving average of a target's "
        "latency (1: only the newest counts).",
    )


class ResponsesSettings(StrictModel):
    """Stored responses of POST /v1/responses, which `previous_response_id` continues from."""

    store: bool = Field(
        True,
        description="Keep responses whose request does not say `store: false` (OpenAI's "
        "default), in the stack's Redis, for `previous_response_id`, retrieval and deletion; "
        "false stores none (every answer says `store: false`; `previous_response_id` is "
        "refused with a 400).",
    )
    store_ttl_s: int = Field(
        30 * 24 * 3600,
        ge=60,
        le=365 * 24 * 3600,
        description="How long a stored response is kept (its conversation, output, model and "
        "owner), from when it was answered; OpenAI keeps them 30 days.",
    )


class RouterSettings(ServiceSettings):
    """Where the router listens, and how it caches and fails over."""

    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9101, ge=0, le=65535, description="Prometheus /metrics port.")
    cache: CacheSettings = CacheSettings()
    failover: FailoverSettings = FailoverSettings()
    routing: RoutingSettings = RoutingSettings()
    responses: ResponsesSettings = ResponsesSettings()
    via_egress: bool = Field(
        True,
        description="Call providers through Envoy's egress listener (one cluster per provider, "
        "so Envoy's fault injection, circuit breakers and stats apply); false calls them "
        "directly.",
    )
    stream_keepalive_s: float = Field(
        5.0,
        gt=0,
        le=120,
        description="Before a slow model's first token, an SSE comment is sent this often so "
        "idle-timeouts along the way do not cut the stream.",
    )
