"""The rate limiter's own Prometheus metrics (the per-RPC ones come from common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "llmproxy_ratelimit_decisions_total",
    "ShouldRateLimit answers by outcome: ok, over_limit, shadow (a shadow-mode limit would have "
    "refused), degraded (decided by this instance's local limiter while Redis is unreachable), "
    "late (ready too late for Envoy's deadline, or Envoy gave up: nothing stays counted).",
    ["domain", "outcome"],
)
LOCAL_CACHE_HITS = Counter(
    "llmproxy_ratelimit_local_cache_hits_total",
    "Descriptor checks refused from the local over-limit cache, without Redis.",
)
BATCH_CHECKS = Histogram(
    "llmproxy_ratelimit_batch_checks",
    "Descriptor checks per Redis script call (concurrent requests share calls).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
DEGRADED = Gauge(
    "llmproxy_ratelimit_degraded", "1 while this instance decides with its local limiter."
)
DEGRADATIONS = Counter(
    "llmproxy_ratelimit_degradations_total", "Times this instance lost Redis and degraded."
)
CONFIG_RELOADS = Counter(
    "llmproxy_ratelimit_config_reloads_total",
    "Limits file loads by result: applied, unchanged, rejected (the old limits stay).",
    ["result"],
)
RECONCILIATIONS = Counter(
    "llmproxy_ratelimit_token_reconciliations_total",
    "Token reservations corrected with actual usage, by direction.",
    ["direction"],
)
