"""Prometheus counters of tokens and spend per tenant and model, with bounded label values.

Models come from the configuration, so they are few. Tenants are whatever the authz service
names, so the first `max_tenants` distinct ones keep their own series and every later one is
counted as "other": a stack with many tenants cannot blow up Prometheus.
"""

from __future__ import annotations

from prometheus_client import Counter

OTHER_TENANT = "other"
DEFAULT_MAX_TENANTS = 100

USAGE_TOKENS = Counter(
    "llmproxy_usage_tokens_total",
    "Provider tokens used, by tenant (first 100, then 'other'), model and kind "
    "(prompt, completion, or cached_prompt: the part of prompt read from the provider's "
    "prompt cache).",
    ["tenant", "model", "kind"],
)
USAGE_COST = Counter(
    "llmproxy_usage_cost_usd_total",
    "Provider spend in USD at the configured prices of the target that answered, by tenant "
    "and model.",
    ["tenant", "model"],
)


class UsageMetrics:
    """Adds each answered call's tokens and cost to the usage counters."""

    def __init__(
        self,
        max_tenants: int = DEFAULT_MAX_TENANTS,
        tokens: Counter = USAGE_TOKENS,
        cost: Counter = USAGE_COST,
    ) -> None:
        if max_tenants < 0:
            raise ValueError(f"max_tenants must be >= 0, not {max_tenants}")
        self._max_tenants = max_tenants
        self._tenants: set[str] = set()
        self._tokens = tokens
        self._cost = cost

    def tenant_label(self, tenant: str) -> str:
        """The label value counting tenant: its own name while there is room, else "other"."""
        if tenant in self._tenants:
            return tenant
        if len(self._tenants) < self._max_tenants and tenant != OTHER_TENANT:
            self._tenants.add(tenant)
            return tenant
        return OTHER_TENANT

    def observe(
        self,
        tenant: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: float,
        *,
        cached_tokens: int = 0,
    ) -> None:
        """Count one call's usage; cached_tokens is the part of prompt_tokens the provider read
        from its prompt cache."""
        label = self.tenant_label(tenant)
        self._tokens.labels(label, model, "prompt").inc(max(prompt_tokens, 0))
        self._tokens.labels(label, model, "completion").inc(max(completion_tokens, 0))
        if cached_tokens > 0:  # no series for the many stacks whose providers cache nothing
            self._tokens.labels(label, model, "cached_prompt").inc(cached_tokens)
        self._cost.labels(label, model).inc(max(cost_usd, 0.0))


# The router's one instance: the tenant set is per process, like the counters.
USAGE_METRICS = UsageMetrics()
